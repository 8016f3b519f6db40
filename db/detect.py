"""Regression detection over one alert series: no store, no network; the only I/O is reading the thresholds file.

A series is log(candidate / baseline) for one (job fingerprint, metric, batch size, device pair), one `Point` per
pair of runs, ordered by time (DESIGN.md "Regression alerts", issue 7). The store builds the points, calls
`evaluate_series`, keeps the `Alert`s it returns, and delivers their state changes.

How a point is judged, in log-ratio units (so a fall of the candidate and a rise of the baseline look alike):
- Reference: the last `window` accepted points since the last annotation. With at least `min_points` of them the
  centre is their median and the spread is 1.4826 x MAD, floored at `mad_floor`; with fewer, the centre is the
  previous accepted point and only the static `guard` applies (state insufficient_data).
- Violation -> suspected: the point is worse than the centre by more than the practical threshold and by more than
  a one-sided t prediction limit at `suspect_confidence` (for pass@1 the paired McNemar test must agree too).
- Confirmation -> active: the next point (or a rerun) has not gone back, i.e. it is still at least half-way to that
  limit, and the mean of the episode's points is worse than the centre by more than the practical threshold and a
  t limit for a mean of m points at `confidence`. The two-stage test is what lets a 10% drop at 2% noise be caught
  within two runs while stable series raise fewer than 1 active alert per 100 runs (bench/alert_quality.py).
- A suspected episode whose next point goes back is an outlier; an active one whose next point goes back is
  resolved; an annotation ends any open episode (resolved) and restarts the baseline at the annotated point.
Points inside an episode are not accepted into the baseline, so a regression cannot pull the baseline down with it.

Example:
    result = evaluate_series(points, DEFAULT_RULES["decode_tokens_per_s"])
    result.verdicts[-1].state, result.open_alert
"""
from __future__ import annotations

import datetime as dt
import fnmatch
import math
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
from scipy import stats

from runner.errors import UserError

State = Literal["insufficient_data", "ok", "suspected", "active", "resolved", "outlier"]
AlertState = Literal["suspected", "active", "resolved", "outlier"]
MAD_TO_SD = 1.4826  # 1 / Phi^-1(3/4): MAD -> standard deviation for normal noise


@dataclass(frozen=True)
class Point:
    """One pair of runs. `candidate`/`baseline` are the metric on each device (tokens/s, or pass@1 in [0, 1])."""

    at: dt.datetime
    candidate: float
    baseline: float
    candidate_run: str
    baseline_run: str
    annotation: str | None = None  # an intended change at this run: restarts the baseline here
    # pass@1 only: (b, c) = problems passed by the candidate only, by the baseline only (exact McNemar's inputs)
    discordant: tuple[int, int] | None = None

    def __post_init__(self):
        for name in ("candidate", "baseline"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and v >= 0):  # NaN fails this too
                raise ValueError(f"Point.{name} must be a number >= 0, got {v!r}")
        if self.discordant is not None and (len(self.discordant) != 2 or min(self.discordant) < 0):
            raise ValueError(f"Point.discordant must be two counts >= 0, got {self.discordant!r}")

    @property
    def ratio(self) -> float:
        return _div(self.candidate, self.baseline)


@dataclass(frozen=True)
class MetricRule:
    """Thresholds for one metric. Fractions are of the ratio (0.05 = 5%); spreads are in log-ratio units."""

    threshold: float = 0.05  # practical: the smallest change worth an alert
    higher_is_better: bool = True  # False for ttft_ms-like metrics: a rise of the ratio is the regression
    min_points: int = 5  # accepted points before the robust baseline replaces the static guard
    window: int = 20  # most recent accepted points that make the baseline
    mad_floor: float = 0.01  # ~1% spread: run-to-run noise below that is not believable across two hosts
    suspect_confidence: float = 0.95  # one-sided, one point; low enough to see a 10% drop at 2% noise on run 1
    confidence: float = 0.99  # one-sided, mean of the episode; this is what keeps false active alerts rare
    guard: float = 0.20  # while data is insufficient: a drop this large against the previous point
    paired_alpha: float | None = None  # pass@1: the exact McNemar p-value (candidate worse) must also be below this

    def __post_init__(self):
        fraction = {"threshold": self.threshold, "guard": self.guard}
        if self.paired_alpha is not None:
            fraction["paired_alpha"] = self.paired_alpha
        for name, v in fraction.items():
            if not 0 < v < 1:
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

    def practical(self) -> float:
        """The threshold as a log-ratio distance in the bad direction."""
        return -math.log1p(-self.threshold) if self.higher_is_better else math.log1p(self.threshold)


SPEED_METRICS = ("first_token_tokens_per_s", "decode_tokens_per_s")
DEFAULT_RULES: dict[str, MetricRule] = {
    "first_token_tokens_per_s": MetricRule(),
    "decode_tokens_per_s": MetricRule(),
    # greedy pass@1 moves in steps of 1/164: the paired test on per-problem outcomes decides what is noise
    "pass_at_1": MetricRule(paired_alpha=0.05),
}


@dataclass(frozen=True)
class Verdict:
    """The judgement of one point. Ratios are candidate/baseline; `change_pct` is against the baseline ratio."""

    point: Point
    state: State
    ratio: float
    baseline_ratio: float | None  # centre of the reference; None when there is none yet
    change_pct: float | None  # 100 x (ratio / baseline_ratio - 1)
    limit_pct: float | None  # the change (in the bad direction) a point had to pass to be a violation
    moved: str | None  # on episode points: "candidate fell", "baseline rose", or both
    p_value: float | None  # pass@1: one-sided exact McNemar p of this point's pair
    reason: str

    @property
    def candidate_run(self) -> str:
        return self.point.candidate_run

    @property
    def baseline_run(self) -> str:
        return self.point.baseline_run


@dataclass(frozen=True)
class Alert:
    """One episode: its violating points, and the point that closed it (back in range, or annotated)."""

    state: AlertState
    verdicts: tuple[Verdict, ...]
    closed_by: Verdict | None = None

    @property
    def opened(self) -> Verdict:
        return self.verdicts[0]

    @property
    def latest(self) -> Verdict:
        return self.verdicts[-1]

    @property
    def identity(self) -> tuple[str, str]:
        """The run pair that opened the episode: stable across re-evaluations, so the store can upsert on it."""
        return (self.opened.candidate_run, self.opened.baseline_run)

    @property
    def run_ids(self) -> list[tuple[str, str]]:
        return [(v.candidate_run, v.baseline_run) for v in self.verdicts]


@dataclass(frozen=True)
class SeriesResult:
    verdicts: list[Verdict]
    alerts: list[Alert]

    @property
    def open_alert(self) -> Alert | None:
        """The episode still open at the latest point (suspected or active), if any."""
        if self.alerts and self.alerts[-1].state in ("suspected", "active"):
            return self.alerts[-1]
        return None


def _div(a: float, b: float) -> float:
    if b == 0:
        return math.nan if a == 0 else math.inf
    return a / b


def _log(x: float) -> float:
    return math.log(x) if x > 0 else -math.inf


@lru_cache(maxsize=None)
def _t(confidence: float, df: int) -> float:
    return float(stats.t.ppf(confidence, df))


def mcnemar_p(b: int, c: int) -> float:
    """One-sided exact McNemar: p that the candidate is no worse, given b candidate-only and c baseline-only passes."""
    if b + c == 0:
        return 1.0
    return float(stats.binomtest(b, b + c, 0.5, alternative="less").pvalue)


@dataclass
class _Reference:
    centre: float  # log ratio
    centre_c: float  # log candidate, log baseline: to tell which side moved
    centre_b: float
    spread: float | None  # robust sd of the log ratio; None: static guard (insufficient data)
    n: int

    def limit(self, rule: MetricRule, m: int | None) -> float:
        """Distance in the bad direction a point (m=None) or the mean of m points must pass."""
        if self.spread is None:
            stat = -math.log1p(-rule.guard)
        else:
            # prediction limit around a median: var(median) ~ (pi/2) sd^2 / n
            conf, var = (rule.suspect_confidence, 1.0) if m is None else (rule.confidence, 1.0 / m)
            stat = _t(conf, self.n - 1) * self.spread * math.sqrt(var + math.pi / (2 * self.n))
        return max(stat, rule.practical())


def _reference(accepted: Sequence[Point], rule: MetricRule) -> _Reference | None:
    if not accepted:
        return None
    if len(accepted) < rule.min_points:
        last = accepted[-1]
        return _Reference(_log(last.ratio), _log(last.candidate), _log(last.baseline), None, len(accepted))
    y = np.log([p.ratio for p in accepted])
    centre = float(np.median(y))
    spread = max(MAD_TO_SD * float(np.median(np.abs(y - centre))), rule.mad_floor)
    return _Reference(centre, float(np.median(np.log([p.candidate for p in accepted]))),
                      float(np.median(np.log([p.baseline for p in accepted]))), spread, len(accepted))


def _badness(rule: MetricRule, log_change: float) -> float:
    """A log change as distance in the bad direction (> 0 is worse)."""
    return -log_change if rule.higher_is_better else log_change


def _moved(rule: MetricRule, ref: _Reference, episode: Sequence[Point]) -> str:
    """Which side explains the episode's change: each side's share of the bad move; a side with >= 1/3 is named."""
    bad_c = _badness(rule, float(np.mean([_log(p.candidate) for p in episode])) - ref.centre_c)
    bad_b = -_badness(rule, float(np.mean([_log(p.baseline) for p in episode])) - ref.centre_b)
    words = ("candidate fell", "baseline rose") if rule.higher_is_better else ("candidate rose", "baseline fell")
    if math.isinf(bad_c) or math.isinf(bad_b):  # a side at 0 (pass@1 of nothing passed)
        sides = [w for w, v in zip(words, (bad_c, bad_b)) if v == math.inf] or [words[0]]
    else:
        total = bad_c + bad_b
        sides = [w for w, v in zip(words, (bad_c, bad_b)) if total > 0 and v >= total / 3]
        sides = sides or [words[0] if bad_c >= bad_b else words[1]]
    return " and ".join(sides)


def _paired_p(episode: Sequence[Point]) -> float | None:
    counts = [p.discordant for p in episode]
    if any(c is None for c in counts):
        return None
    return mcnemar_p(sum(c[0] for c in counts), sum(c[1] for c in counts))


def evaluate_series(points: Iterable[Point], rule: MetricRule) -> SeriesResult:
    """Judge every point of one series in time order and collect the alert episodes.

    Deterministic and pure: the store can re-run it over the whole series after each push; an `Alert.identity`
    names the same episode each time (annotating a past point can make an episode disappear: close it then).
    """
    points = sorted(points, key=lambda p: p.at)
    verdicts: list[Verdict] = []
    episodes: list[tuple[list[int], int | None, AlertState]] = []  # (violating indices, closing index, final state)
    accepted: list[Point] = []
    episode: list[int] = []  # indices of the open episode's points
    practical = rule.practical()

    def close(closing: int | None, state: AlertState) -> None:
        episodes.append((list(episode), closing, state))
        if state == "outlier":
            accepted.extend(points[j] for j in episode if math.isfinite(_log(points[j].ratio)))
            for j in episode:
                verdicts[j] = replace(verdicts[j], state="outlier", reason=verdicts[j].reason + "; went back: outlier")
        episode.clear()

    for i, p in enumerate(points):
        y = _log(p.ratio) if not math.isnan(p.ratio) else math.nan
        if p.annotation is not None:
            if episode:
                close(i, "resolved")
            accepted.clear()
        ref = _reference(accepted[-rule.window:], rule)
        base = dict(point=p, ratio=p.ratio, moved=None, p_value=None)
        if math.isnan(y) or ref is None:
            why = "ratio undefined (both values are 0)" if math.isnan(y) else (
                f"baseline restarted: {p.annotation}" if p.annotation is not None else "first point of the series")
            verdicts.append(Verdict(state="insufficient_data", baseline_ratio=None, change_pct=None, limit_pct=None,
                                    reason=why, **base))
            if math.isfinite(y):
                accepted.append(p)
            continue

        bad = _badness(rule, y - ref.centre)
        limit = ref.limit(rule, None)
        base.update(baseline_ratio=math.exp(ref.centre), change_pct=100 * math.expm1(y - ref.centre),
                    limit_pct=100 * math.expm1(limit))
        point_p = _paired_p([p]) if rule.paired_alpha is not None else None
        significant = rule.paired_alpha is None or (point_p is not None and point_p < rule.paired_alpha)
        static = ref.spread is None
        summary = (f"ratio {p.ratio:.4g} vs baseline {math.exp(ref.centre):.4g} "
                   f"({base['change_pct']:+.1f}%, limit {base['limit_pct']:.1f}%"
                   + (", static guard" if static else "") + (f", McNemar p={point_p:.3g}" if point_p is not None else "")
                   + ")")
        base["p_value"] = point_p

        if episode:
            was_active = verdicts[episode[-1]].state == "active"
            if bad > limit / 2:  # not gone back: this run keeps (or confirms) the episode
                episode.append(i)
                ep_points = [points[j] for j in episode]
                if was_active:
                    state: State = "active"
                else:
                    mean_bad = _badness(rule, float(np.mean([_log(q.ratio) for q in ep_points])) - ref.centre)
                    ep_p = _paired_p(ep_points) if rule.paired_alpha is not None else None
                    confirmed = mean_bad > ref.limit(rule, len(ep_points)) and (
                        rule.paired_alpha is None or (ep_p is not None and ep_p < rule.paired_alpha))
                    state = "active" if confirmed else "suspected"
                verdicts.append(Verdict(state=state, reason=f"{summary}: {state}",
                                        **{**base, "moved": _moved(rule, ref, ep_points)}))
                continue
            close(i, "resolved" if was_active else "outlier")
            verdicts.append(Verdict(state="resolved" if was_active else "ok", reason=f"{summary}: back in range",
                                    **base))
            if math.isfinite(y):
                accepted.append(p)
            continue

        if bad > limit and significant:
            episode.append(i)
            verdicts.append(Verdict(state="suspected", reason=f"{summary}: suspected",
                                    **{**base, "moved": _moved(rule, ref, [p])}))
            continue
        verdicts.append(Verdict(state="insufficient_data" if static else "ok", reason=summary, **base))
        if math.isfinite(y):
            accepted.append(p)

    if episode:
        episodes.append((list(episode), None, verdicts[episode[-1]].state))  # still open
    alerts = [Alert(state, tuple(verdicts[j] for j in idx), verdicts[c] if c is not None else None)
              for idx, c, state in episodes]
    return SeriesResult(verdicts, alerts)
