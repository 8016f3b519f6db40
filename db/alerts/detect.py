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


@dataclass
class Entry:
    """A run of a device's open episode: its verdict, signed log change, log value, and `seq`, its place in the
    series (points judged before it), which orders episodes by when they opened."""

    verdict: Verdict
    change: float
    log: float
    seq: int
    index: int | None = None  # its place in Detector.verdicts; None for a run judged before the detector resumed


class Device:
    """One device's accepted runs since its last annotation (the last `window`: all a reference reads), its open
    episode, and `seen`: its latest run the series has judged or joined."""

    def __init__(self, side: Side, rule: MetricRule):
        self.side, self.rule = side, rule
        self.sign = 1 if side == "candidate" else -1  # a baseline rise is a ratio fall
        self.accepted: list[float] = []
        self.episode: list[Entry] = []
        self.seen: str | None = None

    def accept(self, x: float) -> None:
        if math.isfinite(x):  # a run at 0 can alert but never becomes the reference
            self.accepted.append(x)
            del self.accepted[:-self.rule.window]

    def reference(self) -> _Reference | None:
        return _Reference(self.accepted, self.rule) if self.accepted else None


def _pct(log_change: float) -> str:
    return f"{100 * math.expm1(log_change):+.1f}%"


class Detector:
    """Judges one series point by point, in time order. Everything a later verdict depends on is in `devices` and
    `judged`, so the store can keep that (db.alerts.checkpoint) and resume with only the points that arrived since:
    the same verdicts and episodes as judging the whole series again."""

    def __init__(self, rule: MetricRule):
        self.rule = rule
        self.devices = {side: Device(side, rule) for side in ("candidate", "baseline")}
        self.judged = 0  # points judged over the whole series
        self.verdicts: list[Verdict] = []  # judged by this detector (since it was made or resumed)
        self.closed: list[tuple[int, Episode]] = []  # (seq of its first run, episode) closed by this detector

    def episodes(self) -> list[Episode]:
        """Episodes closed by this detector and the ones still open, in the order they opened."""
        still = [(d.episode[0].seq, Episode(d.episode[-1].verdict.state, tuple(e.verdict for e in d.episode)))
                 for d in self.devices.values() if d.episode]
        return [e for _, e in sorted(self.closed + still, key=lambda se: se[0])]

    def _significant(self, points: Sequence[Point]) -> tuple[bool, float | None]:
        """pass@1: McNemar over the runs' pooled discordant counts (a rerun adds evidence)."""
        if self.rule.paired_alpha is None:
            return True, None
        if any(p.discordant is None for p in points):
            return False, None
        p = mcnemar_p(sum(p.discordant[0] for p in points), sum(p.discordant[1] for p in points), alternative="less")
        return p < self.rule.paired_alpha, p

    def _close(self, dev: Device, state: AlertState, why: str, closes: list) -> None:
        if state == "outlier":
            for e in dev.episode:
                dev.accept(e.log)
                e.verdict = replace(e.verdict, state="outlier", reason=f"{e.verdict.reason}; {why}")
                if e.index is not None:
                    self.verdicts[e.index] = e.verdict
        closes.append((list(dev.episode), state, why))
        dev.episode.clear()

    def feed(self, p: Point) -> Verdict:
        """Judge the next point (its `at` not before the last one's)."""
        dev, other = self.devices[p.arrived], self.devices[p.other]
        if other.seen != p.run(p.other):  # the series' first point: the other device's run joins unjudged
            other.accept(_log(getattr(p, p.other)))
            other.seen = p.run(p.other)
        dev.seen = p.run()
        x, closes = _log(getattr(p, p.arrived)), []
        verdict, change, joins = self._judge(p, dev, other, x, closes)
        self.verdicts.append(verdict)
        for entries, state, why in closes:  # this run closed them
            self.closed.append((entries[0].seq, Episode(state, tuple(e.verdict for e in entries), verdict, why)))
        if joins:
            dev.episode.append(Entry(verdict, change, x, self.judged, len(self.verdicts) - 1))
        else:
            dev.accept(x)
        self.judged += 1
        return verdict

    def _judge(self, p: Point, dev: Device, other: Device, x: float, closes: list) -> tuple[Verdict, float, bool]:
        """The run's verdict, its signed log change, and whether it joins its device's episode (else it is accepted
        into the reference)."""
        rule = self.rule
        if p.annotation is not None:
            if dev.episode:
                self._close(dev, "resolved", f"annotated at {p.arrived} run {p.run()[:8]}: {p.annotation}: resolved",
                            closes)
            dev.accepted.clear()
        ref, other_ref = dev.reference(), other.reference()
        level = other_ref.centre if other_ref else _log(getattr(p, p.other))
        log_ratio = dev.sign * (x - level)
        ratio = math.exp(log_ratio)
        what = f"{p.arrived} run {p.run()[:8]}"
        if ref is None:
            why = (f"annotated at {what}: {p.annotation}; reference restarted" if p.annotation is not None else
                   f"first {p.arrived} run of the series" if math.isfinite(x) else
                   f"{what} is 0 and no earlier {p.arrived} run is above 0: nothing to compare with")
            return Verdict(p, "insufficient_data", ratio, None, None, None, None, None, why), math.nan, False

        d = dev.sign * (x - ref.centre)
        bad, limit = rule.badness(d), ref.limit()
        sig, p_value = self._significant([p])
        usual = math.exp(dev.sign * (ref.centre - level))
        summary = (f"{what}: ratio {ratio:.4g} vs usual {usual:.4g}, {_pct(d)} "
                   f"(limit {rule.limit_pct(limit):+.1f}%{', static guard' if ref.spread is None else ''}"
                   f"{'' if p_value is None else f', McNemar p={p_value:.2g}'})")

        def verdict(state: State, why: str, moved: str | None = None) -> Verdict:
            return Verdict(p, state, ratio, usual, 100 * math.expm1(d), rule.limit_pct(limit), moved, p_value, why)

        if dev.episode:
            was_active = dev.episode[-1].verdict.state == "active"
            so_far = _mean([e.change for e in dev.episode])
            # a step change looks alike on each run: while suspected, a later run nearer the reference than the
            # episode so far means the episode began with a lone dip, however bad the later run is on its own
            held = bad > HOLD * limit and (was_active or bad >= rule.badness(so_far) / 2)
            if held:
                if was_active:
                    return verdict("active", f"{summary}: still active", rule.moved(p.arrived)), d, True
                # new evidence only: the suspected run never confirms itself ...
                later = [e.change for e in dev.episode[1:]] + [d]
                mean, first = _mean(later), dev.episode[0].change
                limit_m = ref.limit(len(later))
                # ... and must clear the same bar as the later runs: a level that moved shows on every run, while a
                # far-out run right after a merely suspect one is a dip next to noise
                confirmed = (min(rule.badness(mean), rule.badness(first)) > limit_m
                             and self._significant([e.verdict.point for e in dev.episode[1:]] + [p])[0])
                why = (f"{summary}; the suspected run {_pct(first)} and the {len(later)} {p.arrived} run(s) after it "
                       f"averaging {_pct(mean)} (limit {rule.limit_pct(limit_m):+.1f}% for {len(later)} run(s)): "
                       + ("active" if confirmed else "not confirmed yet"))
                return verdict("active" if confirmed else "suspected", why, rule.moved(p.arrived)), d, True
            back = (f"{what} went back: {_pct(d)} (staying needs {rule.limit_pct(HOLD * limit):+.1f}%"
                    f"{'' if was_active else f' and {_pct(so_far / 2)}, half the episode mean'})")
            if was_active:
                why = f"{back}: resolved after {len(dev.episode)} {p.arrived} run(s) averaging {_pct(so_far)}"
                self._close(dev, "resolved", why, closes)
                return verdict("resolved", why), d, False
            self._close(dev, "outlier", f"{back}: outlier", closes)
        # no open episode (any more): this run on its own
        if bad > limit and sig:
            return (verdict("suspected", f"{summary}: suspected, waiting for a later {p.arrived} run",
                            rule.moved(p.arrived)), d, True)
        return verdict("insufficient_data" if ref.spread is None else "ok", summary), d, False


def evaluate_series(points: Iterable[Point], rule: MetricRule) -> SeriesResult:
    """Judge every run of one series in time order and collect the episodes.

    Pure and deterministic, so the store can judge the whole series again whenever its checkpoint cannot be used:
    a verdict depends only on earlier points, and `Episode.identity` names the same episode each time. Annotating a
    past run can make an episode vanish: the store closes it then.
    """
    detector = Detector(rule)
    for p in sorted(points, key=lambda p: p.at):  # stable: runs that finished together keep the pairing order
        detector.feed(p)
    return SeriesResult(detector.verdicts, detector.episodes())
