"""Regression detection over one alert series: pure, no store, no network.

A series is the ratio candidate / baseline of one metric for one job, batch size and device pair. Its points come
in pairing order (db.pairing), one per run that landed once both devices had a run: `Point.arrived` names the device
whose run is new; the other value is that device's latest run, already judged when it landed.

How a run is judged, in log units (so a fall of the candidate and a rise of the baseline look alike):
- Each device keeps its own reference: its last `window` accepted runs since its last annotation. With at least
  `min_points` of them the centre is their median and the spread their sd with each run clipped to within
  CLIP robust sds (1.4826 x MAD) of the median, floored at `mad_floor`; with fewer, the centre is the device's
  previous accepted run and only the static `guard` applies (state insufficient_data).
- A run's change is its distance from its own device's centre, signed as the ratio moves. As a ratio: the run over
  the other device's usual level (its centre), against the usual ratio (the two centres). So every run is judged
  once, by itself; the other device's single latest run plays no part, and one bad run cannot spill into the
  points that later runs of the other device make.
- Violation -> suspected: worse than the practical threshold and a one-sided t prediction limit at
  `suspect_confidence` (pass@1: the exact McNemar test against the other device's latest run must agree).
- Only new evidence settles a suspicion: later runs of the same device. A later run that has gone back (less bad
  than HOLD x the one-run limit or, while suspected, nearer the reference than the episode's mean so far) ends the
  episode: outlier if it was suspected, resolved if active. Otherwise it joins, and the episode turns active once
  the runs after the suspected one average worse than the practical threshold and a t limit for a mean of that
  many runs at `confidence`, and the suspected run is beyond that limit too. The suspected run never counts
  towards its own confirmation: a lone dip turns active only if later runs are themselves that far out.
- Runs of the other device neither confirm nor end an episode: they are judged on their own, so each device can
  have an episode at once, and each alert names its side ("candidate fell", "baseline rose").
- An annotation at a run closes that device's open episode (resolved) and restarts its reference at that run.
Episode runs stay out of the reference, so a regression cannot drag the reference down with it; outliers join it
once they have gone back (median and MAD shrug them off; dropping them would bias the spread low).

Example:
    result = evaluate_series(points, DEFAULT_RULES["decode_tokens_per_s"])
    result.verdicts[-1].state, result.open_episodes
"""
from __future__ import annotations

import datetime as dt
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Literal

from core.rules import mcnemar_p
from db.alerts.config import MetricRule

State = Literal["insufficient_data", "ok", "suspected", "active", "resolved", "outlier"]
AlertState = Literal["suspected", "active", "resolved", "outlier"]
Side = Literal["candidate", "baseline"]
MAD_TO_SD = 1.4826  # 1 / Phi^-1(3/4): MAD -> standard deviation under normal noise
# The spread is the sd of the runs clipped to within this many robust sds of the median: a past outlier moves it
# little, yet on normal noise it is nearly as precise as a plain sd, so its t quantile has n - 1 degrees of freedom.
# (A MAD alone is worth 37% of the runs: with 8 runs its 99.99% quantile is 3x the normal one, and no drop of a
# young series could be confirmed by one later run.)
CLIP = 3.0
# A later run "has not gone back" while it is still this fraction of the one-run limit towards the bad side.
HOLD = 0.5


@dataclass(frozen=True)
class Point:
    """The run that arrived (`arrived`: its device) with the other device's latest run; values are the metric
    (tokens/s, or pass@1) on each device."""

    at: dt.datetime
    candidate: float
    baseline: float
    candidate_run: str
    baseline_run: str
    arrived: Side = "candidate"
    annotation: str | None = None  # an intended change at the arrived run: restarts that device's reference
    # pass@1: (b, c) = problems passed by the candidate only, by the baseline only (exact McNemar's inputs)
    discordant: tuple[int, int] | None = None

    def __post_init__(self):
        for name in ("candidate", "baseline"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < math.inf:  # NaN fails too
                raise ValueError(f"Point.{name} must be a finite number >= 0, got {v!r}")
        if self.arrived not in ("candidate", "baseline"):
            raise ValueError(f"Point.arrived must be 'candidate' or 'baseline', got {self.arrived!r}")
        if self.discordant is not None and (len(self.discordant) != 2 or min(self.discordant) < 0):
            raise ValueError(f"Point.discordant must be two counts >= 0, got {self.discordant!r}")

    @property
    def other(self) -> Side:
        return "baseline" if self.arrived == "candidate" else "candidate"

    def run(self, side: Side | None = None) -> str:
        """The run id of `side` (default: the run that arrived)."""
        return getattr(self, f"{side or self.arrived}_run")


@dataclass(frozen=True)
class Verdict:
    """The judgement of one run (the point's arrived run). Ratios are candidate/baseline with the other device at
    its usual level; `change_pct` is against the usual ratio."""

    point: Point
    state: State
    ratio: float
    usual_ratio: float | None  # the two devices' centres; None before the arrived device has one
    change_pct: float | None  # 100 x (ratio / usual_ratio - 1)
    limit_pct: float | None  # the change_pct at the one-run limit (negative for higher-is-better metrics)
    moved: str | None  # episode runs: "candidate fell" or "baseline rose"
    p_value: float | None  # pass@1: one-sided exact McNemar p of this run against the other device's latest
    reason: str

    @property
    def side(self) -> Side:
        return self.point.arrived

    @property
    def run(self) -> str:
        return self.point.run()

    @property
    def candidate_run(self) -> str:
        return self.point.candidate_run

    @property
    def baseline_run(self) -> str:
        return self.point.baseline_run


@dataclass(frozen=True)
class Episode:
    """One device's run of bad runs: its verdicts (oldest first) and the one that closed it (a run that went back,
    or an annotation). `confirmed_by` is the verdict that turned it active."""

    state: AlertState
    verdicts: tuple[Verdict, ...]
    closed_by: Verdict | None = None
    ended: str | None = None  # how it closed: the run that went back and by how much, or the annotation

    @property
    def opened(self) -> Verdict:
        return self.verdicts[0]

    @property
    def latest(self) -> Verdict:
        return self.verdicts[-1]

    @property
    def side(self) -> Side:
        return self.opened.side

    @property
    def moved(self) -> str | None:
        return self.opened.moved

    @property
    def confirmed_by(self) -> Verdict | None:
        return next((v for v in self.verdicts if v.state == "active"), None)

    @property
    def identity(self) -> tuple[str, str]:
        """The run pair that opened the episode: the same on every re-evaluation, so the store can upsert on it."""
        return (self.opened.candidate_run, self.opened.baseline_run)

    @property
    def explanation(self) -> str:
        """What the rule used for the current state: the run or the mean of the later runs, the limit, how many runs;
        when over, the run that went back."""
        if self.ended is not None:
            return self.ended
        confirmed = self.confirmed_by
        if confirmed is None:
            return self.latest.reason
        since = self.verdicts.index(confirmed)
        tail = len(self.verdicts) - 1 - since
        return confirmed.reason + (f"; {tail} later run(s) kept it, latest {self.latest.change_pct:+.1f}%"
                                   if tail else "")


@dataclass(frozen=True)
class SeriesResult:
    verdicts: list[Verdict]  # one per point, in time order
    episodes: list[Episode]  # every episode, in the order they opened; at most one per device is still open

    @property
    def open_episodes(self) -> list[Episode]:
        """Episodes still open (suspected or active) at the latest point."""
        return [e for e in self.episodes if e.state in ("suspected", "active") and e.closed_by is None]


def _log(x: float) -> float:
    return math.log(x) if x > 0 else -math.inf


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


@lru_cache(maxsize=None)
def _t(confidence: float, n: int) -> float:
    from scipy import stats  # here, not at the top: importing the CLI stays instant

    return float(stats.t.ppf(confidence, n - 1))


class _Reference:
    """What a device's run is judged against: the device's accepted runs (log values, oldest first)."""

    def __init__(self, logs: Sequence[float], rule: MetricRule):
        self.rule, self.n = rule, len(logs)
        if self.n < rule.min_points:  # static guard against the previous accepted run
            self.centre, self.spread = logs[-1], None
        else:
            self.centre = statistics.median(logs)
            clip = CLIP * MAD_TO_SD * statistics.median([abs(v - self.centre) for v in logs])
            clipped = [min(max(v, self.centre - clip), self.centre + clip) for v in logs]
            mean = math.fsum(clipped) / self.n  # floats: statistics.stdev's exact fractions cost more than the rest
            self.spread = max(math.sqrt(math.fsum((v - mean) ** 2 for v in clipped) / (self.n - 1)), rule.mad_floor)

    def limit(self, m: int | None = None) -> float:
        """Bad-direction distance that one run (m=None) or the mean of m later runs must pass."""
        rule = self.rule
        if self.spread is None:
            stat = rule.practical(rule.guard)
        else:
            # t prediction limit around a median: var(median) ~ (pi/2) sd^2 / n
            conf, var = (rule.suspect_confidence, 1.0) if m is None else (rule.confidence, 1.0 / m)
            stat = _t(conf, self.n) * self.spread * math.sqrt(var + math.pi / (2 * self.n))
        return max(stat, rule.practical())


class _Device:
    """One device's accepted runs since its last annotation, and its open episode (point indices)."""

    def __init__(self, side: Side, rule: MetricRule):
        self.side, self.rule = side, rule
        self.sign = 1 if side == "candidate" else -1  # a baseline rise is a ratio fall
        self.accepted: list[float] = []
        self.episode: list[int] = []

    def accept(self, x: float) -> None:
        if math.isfinite(x):  # a run at 0 can alert but never becomes the reference
            self.accepted.append(x)

    def reference(self) -> _Reference | None:
        return _Reference(self.accepted[-self.rule.window:], self.rule) if self.accepted else None


def _pct(log_change: float) -> str:
    return f"{100 * math.expm1(log_change):+.1f}%"


def evaluate_series(points: Iterable[Point], rule: MetricRule) -> SeriesResult:
    """Judge every run of one series in time order and collect the episodes.

    Pure and deterministic, so the store can re-run it over the whole series after each push: a verdict depends
    only on earlier points, and `Episode.identity` names the same episode each time. Annotating a past run can
    make an episode vanish: the store closes it then.
    """
    points = sorted(points, key=lambda p: p.at)  # stable: runs that finished together keep the pairing order
    devices = {side: _Device(side, rule) for side in ("candidate", "baseline")}
    logs = [_log(getattr(p, p.arrived)) for p in points]
    changes: list[float] = [math.nan] * len(points)  # each run's signed log change of the ratio
    verdicts: list[Verdict] = []
    episodes: list[tuple[list[int], int | None, AlertState, str | None]] = []  # (indices, closing, state, why)
    seen: set[str] = set()

    def significant(idx: Sequence[int]) -> tuple[bool, float | None]:
        """pass@1: McNemar over the runs' pooled discordant counts (a rerun adds evidence)."""
        if rule.paired_alpha is None:
            return True, None
        if any(points[j].discordant is None for j in idx):
            return False, None
        p = mcnemar_p(sum(points[j].discordant[0] for j in idx), sum(points[j].discordant[1] for j in idx),
                      alternative="less")
        return p < rule.paired_alpha, p

    def close(dev: _Device, closing: int | None, state: AlertState, why: str) -> None:
        episodes.append((list(dev.episode), closing, state, why))
        if state == "outlier":
            for j in dev.episode:
                dev.accept(logs[j])
                verdicts[j] = replace(verdicts[j], state="outlier", reason=f"{verdicts[j].reason}; {why}")
        dev.episode.clear()

    for i, p in enumerate(points):
        dev, other = devices[p.arrived], devices[p.other]
        if p.run(p.other) not in seen:  # the series' first point: the other device's run joins unjudged
            other.accept(_log(getattr(p, p.other)))
            seen.add(p.run(p.other))
        seen.add(p.run())
        if p.annotation is not None:
            if dev.episode:
                close(dev, i, "resolved", f"annotated at {p.arrived} run {p.run()[:8]}: {p.annotation}: resolved")
            dev.accepted.clear()
        x, ref, other_ref = logs[i], dev.reference(), other.reference()
        level = other_ref.centre if other_ref else _log(getattr(p, p.other))
        log_ratio = dev.sign * (x - level)
        ratio = math.exp(log_ratio)
        what = f"{p.arrived} run {p.run()[:8]}"
        if ref is None:
            why = (f"annotated at {what}: {p.annotation}; reference restarted" if p.annotation is not None else
                   f"first {p.arrived} run of the series" if math.isfinite(x) else
                   f"{what} is 0 and no earlier {p.arrived} run is above 0: nothing to compare with")
            verdicts.append(Verdict(p, "insufficient_data", ratio, None, None, None, None, None, why))
            dev.accept(x)
            continue

        d = changes[i] = dev.sign * (x - ref.centre)
        bad, limit = rule.badness(d), ref.limit()
        sig, p_value = significant([i])
        usual = math.exp(dev.sign * (ref.centre - level))
        summary = (f"{what}: ratio {ratio:.4g} vs usual {usual:.4g}, {_pct(d)} "
                   f"(limit {rule.limit_pct(limit):+.1f}%{', static guard' if ref.spread is None else ''}"
                   f"{'' if p_value is None else f', McNemar p={p_value:.2g}'})")

        def verdict(state: State, why: str, moved: str | None = None) -> Verdict:
            return Verdict(p, state, ratio, usual, 100 * math.expm1(d), rule.limit_pct(limit), moved, p_value, why)

        if dev.episode:
            was_active = verdicts[dev.episode[-1]].state == "active"
            so_far = _mean([changes[j] for j in dev.episode])
            # a step change looks alike on each run: while suspected, a later run nearer the reference than the
            # episode so far means the episode began with a lone dip, however bad the later run is on its own
            held = bad > HOLD * limit and (was_active or bad >= rule.badness(so_far) / 2)
            if held:
                dev.episode.append(i)
                if was_active:
                    verdicts.append(verdict("active", f"{summary}: still active", rule.moved(p.arrived)))
                    continue
                later = dev.episode[1:]  # new evidence only: the suspected run never confirms itself ...
                mean, first = _mean([changes[j] for j in later]), changes[dev.episode[0]]
                limit_m = ref.limit(len(later))
                # ... and must clear the same bar as the later runs: a level that moved shows on every run, while a
                # far-out run right after a merely suspect one is a dip next to noise
                state: State = ("active" if min(rule.badness(mean), rule.badness(first)) > limit_m
                                and significant(later)[0] else "suspected")
                why = (f"{summary}; the suspected run {_pct(first)} and the {len(later)} {p.arrived} run(s) after it "
                       f"averaging {_pct(mean)} (limit {rule.limit_pct(limit_m):+.1f}% for {len(later)} run(s)): "
                       + ("active" if state == "active" else "not confirmed yet"))
                verdicts.append(verdict(state, why, rule.moved(p.arrived)))
                continue
            back = (f"{what} went back: {_pct(d)} (staying needs {rule.limit_pct(HOLD * limit):+.1f}%"
                    f"{'' if was_active else f' and {_pct(so_far / 2)}, half the episode mean'})")
            if was_active:
                why = f"{back}: resolved after {len(dev.episode)} {p.arrived} run(s) averaging {_pct(so_far)}"
                close(dev, i, "resolved", why)
                verdicts.append(verdict("resolved", why))
                dev.accept(x)
                continue
            close(dev, i, "outlier", f"{back}: outlier")
        # no open episode (any more): this run on its own
        if bad > limit and sig:
            dev.episode.append(i)
            verdicts.append(verdict("suspected", f"{summary}: suspected, waiting for a later {p.arrived} run",
                                    rule.moved(p.arrived)))
            continue
        verdicts.append(verdict("insufficient_data" if ref.spread is None else "ok", summary))
        dev.accept(x)

    for dev in devices.values():
        if dev.episode:
            episodes.append((list(dev.episode), None, verdicts[dev.episode[-1]].state, None))  # still open
    episodes.sort(key=lambda e: e[0][0])
    return SeriesResult(verdicts, [Episode(state, tuple(verdicts[j] for j in idx), verdicts[c] if c is not None
                                           else None, why) for idx, c, state, why in episodes])
