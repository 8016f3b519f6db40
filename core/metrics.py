"""The metric registry: every metric the product compares, defined once.

A metric's entry says where it is measured (a perf record per batch size, or the HumanEval record), how it is
labelled and formatted, which direction is better, whether it heads the comparison table, trends and alerts, and
how its default alert rule differs from the common one. The comparison tables, trends, alert series, the store's
ingest and the dashboard all read this table; none keeps a list of its own.

Adding a metric (see ARCHITECTURE.md for a worked example): add a `Metric` here, measure it where its `source`
is produced (runner/perf.py for "perf" and "energy", runner/humaneval for "humaneval", runner/serving for
"serving"), and give it a column in db/models.py with an Alembic migration ("energy" needs none: it lives in the
run's extra JSON). Tables, trends, alerts and the dashboard pick it up from its flags.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, Mapping

Source = Literal["perf", "humaneval", "serving", "energy"]
Kind = Literal["value", "fraction", "count"]


@dataclass(frozen=True)
class Metric:
    name: str  # the key in run documents and the column in the store
    label: str  # what people read (the reference report's wording where it has one)
    unit: str  # "" for plain numbers
    # "perf": one value per batch size; "humaneval": one per run; "serving": one per load level; "energy": one per
    # batch size, in the run document's extra.energy records (kept in the store's runs.extra; absent, never zero,
    # where the host has no power meter)
    source: Source
    higher_is_better: bool = True
    kind: Kind = "value"  # how a value is formatted
    timed: bool = False  # a timing: stored as median with p10/p90 and every raw repeat
    headline: bool = False  # a row or column of the comparison table, a trend and an alert series
    # overrides of the default alert rule (db.alerts.detect.MetricRule fields); MappingProxy keeps the registry frozen
    alert: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))
    # serving: an alert series per load level (not headline: the tables and trends of serving are per level)
    alerted: bool = False
    # a serving latency is a distribution over requests: stored as its median plus these percentiles (name_p90, ...)
    quantiles: tuple[str, ...] = ()

    def format(self, value) -> str:
        return format_value(value, self.kind)


REGISTRY: tuple[Metric, ...] = (
    # HumanEval (the reference report's accuracy table)
    Metric("problems", "HumanEval problems", "", "humaneval", kind="count"),
    Metric("passed", "passed", "", "humaneval", kind="count"),
    # pass@1 moves in steps of 1/164: the paired test on per-problem outcomes tells a real drop from noise
    Metric("pass_at_1", "pass@1", "", "humaneval", kind="fraction", headline=True,
           alert=MappingProxyType({"paired_alpha": 0.05})),
    # speed (the reference report's speed table, per batch size)
    Metric("first_token_tokens_per_s", "first-token speed", "tokens/s", "perf", timed=True, headline=True),
    Metric("decode_tokens_per_s", "incremental speed", "tokens/s", "perf", timed=True, headline=True),
    Metric("ttft_ms", "time to first token", "ms", "perf", higher_is_better=False, timed=True),
    Metric("tpot_ms", "time per output token", "ms", "perf", higher_is_better=False, timed=True),
    Metric("e2e_ms", "end-to-end latency", "ms", "perf", higher_is_better=False, timed=True),
    Metric("peak_memory_bytes", "peak device memory", "bytes", "perf", higher_is_better=False, kind="count"),
    Metric("bandwidth_gbps", "memory bandwidth", "GB/s", "perf"),
    Metric("bandwidth_util", "bandwidth utilisation", "", "perf", kind="fraction"),
    # serving (an engine behind an OpenAI-compatible endpoint, per concurrency level or request rate); names and
    # definitions follow vLLM's `bench serve`: TPOT excludes the first token, ITL is the gap between streamed chunks
    *(Metric(f"serving_{short}_ms", label, "ms", "serving", higher_is_better=False, quantiles=("p90", "p99"),
             alerted=short in ("ttft", "tpot"))
      for short, label in (("ttft", "time to first token"), ("tpot", "time per output token"),
                           ("itl", "inter-token latency"), ("e2e", "end-to-end latency"))),
    Metric("request_throughput", "request throughput", "requests/s", "serving"),
    Metric("output_throughput", "output token throughput", "tokens/s", "serving", alerted=True),
    # requests/s that met every SLO the job sets (TTFT and TPOT limits); missing when the job sets none
    Metric("goodput", "goodput", "requests/s", "serving"),
    Metric("failed_requests", "failed requests", "", "serving", higher_is_better=False, kind="count"),
    # energy: board power sampled during the timed repeats (runner/power.py), decode tokens per joule
    Metric("tokens_per_joule", "decode energy efficiency", "tokens/J", "energy"),
)
METRICS: dict[str, Metric] = {m.name: m for m in REGISTRY}
HEADLINE: tuple[Metric, ...] = tuple(m for m in REGISTRY if m.headline)  # table columns, trends, alert series
ACCURACY_ROWS: tuple[Metric, ...] = tuple(m for m in REGISTRY if m.source == "humaneval")  # the accuracy table
SPEED: tuple[Metric, ...] = tuple(m for m in HEADLINE if m.source == "perf")  # the speed table's columns
TIMED: tuple[str, ...] = tuple(m.name for m in REGISTRY if m.timed)
# the serving table's rows per level; not headline: trends are built per batch size (the alerted ones are alert
# series per load level)
SERVING: tuple[Metric, ...] = tuple(m for m in REGISTRY if m.source == "serving")
SERVING_ALERTS: tuple[Metric, ...] = tuple(m for m in SERVING if m.alerted)  # alert series per load level
ENERGY: tuple[Metric, ...] = tuple(m for m in REGISTRY if m.source == "energy")  # per batch size, from run.extra


def titled(metric: Metric) -> str:
    """Label with unit, as a table header: "first-token speed (tokens/s)"."""
    return f"{metric.label} ({metric.unit})" if metric.unit else metric.label


def ratio(candidate, baseline) -> float | None:
    """candidate / baseline; None ("n/a") over a missing or zero baseline, never a made-up number."""
    if candidate is None or baseline is None or baseline == 0:
        return None
    r = candidate / baseline
    return r if math.isfinite(r) else None  # a denormal baseline overflows: as undefined as a zero one


def format_value(value, kind: str = "value") -> str:
    """A value as the tables print it: "missing" for an absent value, "n/a" for an undefined ratio."""
    if value is None:
        return "n/a" if kind == "ratio" else "missing"
    if isinstance(value, int):
        return str(value)
    if kind in ("ratio", "fraction"):
        return f"{value:.4f}".rstrip("0").rstrip(".") if value == round(value) else f"{value:.4f}"
    return f"{value:.5g}"
