"""Alert settings: the rule per metric (defaults from the metric registry, overridden by a thresholds file),
suppressions, and the device pairs judged.

The thresholds file is TOML: `[metrics.NAME]` tables of `MetricRule` keys and `[[suppress]]` entries. Settings
come from the environment so every host and the periodic checker agree:
- DEVCOMPARE_ALERTS_CONFIG: the thresholds file (default: the built-in rules);
- DEVCOMPARE_ALERT_PAIRS: device pairs judged, "910B3:A100,910B4:A100" (default: the product's default pair).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import fnmatch
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from core.errors import UserError
from core.metrics import HEADLINE, SERVING_ALERTS
from core.rules import DEFAULT_PAIR
from core.toml import build, read_toml


@dataclass(frozen=True)
class MetricRule:
    """Thresholds for one metric. Fractions are of the ratio (0.05 = 5%); `mad_floor` is in log units."""

    threshold: float = 0.05  # practical: the smallest change worth an alert
    higher_is_better: bool = True  # False for latency-like metrics: a rise of the ratio is the regression
    min_points: int = 5  # accepted runs of a device before its robust reference replaces the static guard
    window: int = 50  # most recent accepted runs of a device that make its reference
    mad_floor: float = 0.01  # spread floor, ~1%: run-to-run noise below that is not believable on real hosts
    suspect_confidence: float = 0.95  # one-sided, one run: a first warning, settled by later runs
    confidence: float = 0.9999  # one-sided, mean of the later runs: one later run confirms only when far out
    guard: float = 0.20  # while data is insufficient: a change this large against the previous run
    paired_alpha: float | None = None  # pass@1: the one-sided exact McNemar p must also be below this

    def __post_init__(self):
        fractions = {"threshold": self.threshold, "guard": self.guard, "paired_alpha": self.paired_alpha}
        for name, v in fractions.items():
            if v is not None and not 0 < v < 1:
                raise ValueError(f"{name} is a fraction in (0, 1), e.g. 0.05 for 5%; got {v}")
        for name in ("suspect_confidence", "confidence"):
            if not 0.5 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0.5, 1), e.g. 0.99; got {getattr(self, name)}")
        if self.min_points < 3:
            raise ValueError(f"min_points must be >= 3 (a spread needs points), got {self.min_points}")
        if self.window < self.min_points:
            raise ValueError(f"window ({self.window}) must be >= min_points ({self.min_points})")
        if self.mad_floor < 0:
            raise ValueError(f"mad_floor must be >= 0, got {self.mad_floor}")

    def badness(self, log_change: float) -> float:
        """A log-ratio change as a distance in the bad direction (> 0 is worse)."""
        return -log_change if self.higher_is_better else log_change

    def limit_pct(self, distance: float) -> float:
        """A bad-direction log distance as the signed % change of the ratio it stands for."""
        return 100 * math.expm1(-distance if self.higher_is_better else distance)

    def practical(self, fraction: float | None = None) -> float:
        """`fraction` (default: the threshold) as a log-ratio distance in the bad direction."""
        f = self.threshold if fraction is None else fraction
        return -math.log1p(-f) if self.higher_is_better else math.log1p(f)

    def moved(self, side: str) -> str:
        """What a bad change of `side` is called: "candidate fell", "baseline rose" (reversed for lower-is-better)."""
        fell = (side == "candidate") == self.higher_is_better
        return f"{side} {'fell' if fell else 'rose'}"


# Every headline metric, and every alerted serving metric, is an alert series; its registry entry says which
# direction is better and what differs from the common rule (pass@1 adds the paired test, since it moves in steps
# of one problem).
DEFAULT_RULES: dict[str, MetricRule] = {
    m.name: replace(MetricRule(higher_is_better=m.higher_is_better), **m.alert) for m in (*HEADLINE, *SERVING_ALERTS)}


@dataclass(frozen=True)
class Suppression:
    """Silence alerts whose series path matches `pattern` until `until` (aware datetime).

    The pattern is matched segment by segment with shell wildcards; fewer segments match a prefix, so
    "*/decode_tokens_per_s/910B3-vs-A100" covers every batch size of that metric and pair.
    """

    pattern: str
    until: dt.datetime
    reason: str = ""

    def matches(self, key) -> bool:
        """`key`: a series path, or anything whose str() is one (a SeriesKey)."""
        want, have = self.pattern.split("/"), str(key).split("/")
        return len(want) <= len(have) and all(fnmatch.fnmatchcase(h, w) for w, h in zip(want, have))


def suppressed_by(key, at: dt.datetime, suppressions: Iterable[Suppression]) -> Suppression | None:
    """The first suppression that silences `key` at time `at` (aware), or None."""
    if at.tzinfo is None:
        raise ValueError("suppressed_by: `at` must be timezone-aware (the store keeps UTC)")
    return next((s for s in suppressions if at < s.until and s.matches(key)), None)


@dataclass(frozen=True)
class AlertConfig:
    rules: dict[str, MetricRule]
    suppressions: tuple[Suppression, ...] = ()

    def rule(self, metric: str) -> MetricRule:
        try:
            return self.rules[metric]
        except KeyError:
            raise UserError(f"no alert rule for metric {metric!r} (known: {', '.join(sorted(self.rules))})") from None


@dataclass(frozen=True)
class _SuppressEntry:
    """A [[suppress]] table as TOML gives it; `until` is checked for an offset before it is built."""

    pattern: str
    until: str
    reason: str = ""


def _rule(metric: str, table) -> MetricRule:
    where = f"metrics.{metric}"
    if metric not in DEFAULT_RULES:
        raise UserError(f"unknown metric '{where}' (known: {', '.join(DEFAULT_RULES)})")
    if not isinstance(table, dict):
        raise UserError(f"{where}: expected a table")
    # the file overrides the metric's default rule key by key; every key is type-checked by core.toml
    defaults = dataclasses.asdict(DEFAULT_RULES[metric])
    try:
        return build(MetricRule, {**defaults, **table}, where)
    except ValueError as e:
        raise UserError(f"{where}: {e}") from None


def _suppression(entry, where: str) -> Suppression:
    if not isinstance(entry, dict):
        raise UserError(f"{where}: expected a table")
    until = entry.get("until")
    if "until" in entry and not (isinstance(until, dt.datetime) and until.tzinfo is not None):
        raise UserError(f"{where}.until: expected a date-time with an offset, e.g. 2025-07-01T00:00:00Z; "
                        f"got {until!r}")
    e = build(_SuppressEntry, {**entry, **({"until": until.isoformat()} if until else {})}, where)
    if not e.pattern or len(e.pattern.split("/")) > 4:
        raise UserError(f"{where}.pattern: expected \"fingerprint/metric/CAND-vs-BASE[/bsN|/cN|/rX]\" with wildcards, "
                        f"got {e.pattern!r}")
    return Suppression(e.pattern, dt.datetime.fromisoformat(e.until), e.reason)


def parse_config(data: Mapping) -> AlertConfig:
    """Validate a parsed thresholds file: [metrics.NAME] tables of MetricRule keys, [[suppress]] entries."""
    unknown = set(data) - {"metrics", "suppress"}
    if unknown:
        raise UserError(f"unknown key '{sorted(unknown)[0]}' (allowed: metrics, suppress)")
    metrics, entries = data.get("metrics", {}), data.get("suppress", [])
    if not isinstance(metrics, dict):
        raise UserError("metrics: expected tables such as [metrics.decode_tokens_per_s]")
    if not isinstance(entries, list):
        raise UserError("suppress: expected [[suppress]] entries")
    rules = {**DEFAULT_RULES, **{metric: _rule(metric, table) for metric, table in metrics.items()}}
    return AlertConfig(rules, tuple(_suppression(e, f"suppress[{n}]") for n, e in enumerate(entries)))


def load_config(path: str | Path | None) -> AlertConfig:
    """Read the thresholds file (TOML); None gives the defaults. Errors are one line naming the file and key."""
    if path is None:
        return AlertConfig(dict(DEFAULT_RULES))
    return read_toml(path, "alert config", parse_config)


def configured(path: str | None = None) -> AlertConfig:
    """The thresholds file given, else $DEVCOMPARE_ALERTS_CONFIG, else the built-in rules."""
    return load_config(path or os.environ.get("DEVCOMPARE_ALERTS_CONFIG"))


def pairs(value: str | None = None) -> tuple[tuple[str, str], ...]:
    """Device pairs to judge, from "CAND:BASE,..." (default: $DEVCOMPARE_ALERT_PAIRS, else the default pair)."""
    value = value if value is not None else os.environ.get("DEVCOMPARE_ALERT_PAIRS", ":".join(DEFAULT_PAIR))
    out = []
    for item in filter(None, (v.strip() for v in value.split(","))):
        cand, sep, base = item.partition(":")
        if not sep or not cand or not base or cand == base:
            raise UserError(f"device pair {item!r}: expected CANDIDATE:BASELINE, e.g. 910B3:A100")
        out.append((cand, base))
    return tuple(out)
