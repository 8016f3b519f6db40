"""Values as people read them: units, thousands separators, a few significant digits, "unknown" for what was not
recorded. The comparison tables keep their own format (core.metrics.format_value: the reference report's digits);
everything else a page shows goes through here.

A stored field's unit comes from the metric registry where the field is a metric (or its p10/p90), else from the
suffix of its name, which carries the unit by the store's convention (`_ms`, `_s`, `_bytes`, `_gbps`, ...).
"""
from __future__ import annotations

import datetime as dt
import math

from core.metrics import METRICS
from db.models import utc

UNKNOWN = "unknown"
# field-name suffix -> unit, for fields outside the metric registry (longest suffix first)
SUFFIX_UNITS = (("_tokens_per_s", "tokens/s"), ("_bytes", "bytes"), ("_gbps", "GB/s"), ("_util", "share"),
                ("_cores", "cores"), ("_tokens", "tokens"), ("_ms", "ms"), ("_s", "s"))
LABELS = {"batch_size": "batch size", "prompt_tokens": "prompt tokens", "new_tokens": "new tokens",
          "warmup": "warm-ups", "repeats": "timed repeats", "cpu_own_cores": "own CPU use",
          "cpu_other_cores": "other processes' CPU use", "cpu_contention": "CPU contention",
          "samples_per_problem": "samples per problem", "pass_at_k": "pass@k", "generation_s": "generation time",
          "execution_s": "execution time", "exec_s": "execution time", "batch_agreement": "batched vs batch 1"}


def number(value, digits: int = 4) -> str:
    """A plain number: integers with thousands separators, others to `digits` significant digits."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return UNKNOWN
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) >= 1000):
        return f"{int(value):,}"
    if abs(value) >= 10 ** digits:
        return f"{value:,.0f}"
    text = f"{value:.{digits}g}"
    return text if "e" not in text else f"{value:.{digits - 1}e}"


def with_unit(value, unit: str) -> str:
    """A value in its unit: bytes as GiB or MiB, a share as a percentage, others with the unit after them."""
    if value is None or isinstance(value, bool) or not unit:
        return number(value)
    if unit == "bytes":
        for size, name in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
            if abs(value) >= size:
                return f"{number(value / size, 3)} {name}"
        return f"{value:,} bytes"
    if unit == "share":
        return f"{value:.1%}"
    return f"{number(value)} {unit}"


def unit_of(field: str) -> str:
    """The registry's unit of a metric (or its p10/p90), else the unit its name ends in ("" for none: pass@1 is a
    plain fraction, a `_util` a share of a peak)."""
    base = field.removesuffix("_p10").removesuffix("_p90")
    if base in METRICS and METRICS[base].unit:
        return METRICS[base].unit
    return next((unit for suffix, unit in SUFFIX_UNITS if base.endswith(suffix)), "")


def label(field: str) -> str:
    """A stored field's name as people say it: the registry's label, p10/p90 spelled out."""
    base, pct = field, ""
    for p in ("_p10", "_p90"):
        if field.endswith(p):
            base, pct = field.removesuffix(p), f", {p[1:]}"
    if base in METRICS:
        return METRICS[base].label + pct
    return LABELS.get(field, field.replace("_", " "))


def field_value(field: str, value) -> str:
    """A stored field's value: by its unit, or a nested value (pass@k, settings) spelled out."""
    if field == "pass_at_k" and isinstance(value, dict):
        return ", ".join(f"pass@{k} {number(v)}" for k, v in sorted(value.items(), key=lambda kv: int(kv[0]))) \
            or UNKNOWN
    if isinstance(value, dict):
        return ", ".join(f"{k} {plain(v)}" for k, v in value.items()) or "none"
    if isinstance(value, (list, tuple)):
        return ", ".join(plain(v) for v in value) or "none"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return with_unit(value, unit_of(field))
    return plain(value)


def plain(value) -> str:
    if isinstance(value, (int, float)) or value is None:
        return number(value)
    if isinstance(value, dt.datetime):
        return when(value)
    return str(value)


def when(t) -> str:
    return UNKNOWN if t is None else f"{utc(t):%Y-%m-%d %H:%M} UTC"


def age(delta: dt.timedelta | None) -> str:
    """How long ago, in the largest unit that fits: "5 min", "3 h", "12 d"."""
    if delta is None:
        return UNKNOWN
    s = max(delta.total_seconds(), 0)
    for size, unit in ((86400 * 365, "y"), (86400, "d"), (3600, "h"), (60, "min")):
        if s >= size:
            return f"{s / size:.0f} {unit}"
    return "just now"


def change(pct: float | None) -> str:
    return UNKNOWN if pct is None else f"{pct:+.1f}%"
