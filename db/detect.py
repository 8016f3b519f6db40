"""Regression detection over one alert series, plus its thresholds file and suppressions. No store, no network.

A series is log(candidate / baseline) for one (job fingerprint, metric, batch size, device pair), one `Point` per
pair of runs, ordered by time (DESIGN.md "Regression alerts", issue 7). The store builds the points (from its
records, or with `point_from_documents`), calls `evaluate_series`, keeps the `Alert`s it returns, and delivers their
state changes (runner/webhook.py).

How a point is judged, in log-ratio units (so a fall of the candidate and a rise of the baseline look alike):
- Reference: the last `window` accepted points since the last annotation. With at least `min_points` of them the
  centre is their median and the spread is 1.4826 x MAD, floored at `mad_floor`; with fewer, the centre is the
  previous accepted point and only the static `guard` applies (state insufficient_data).
- Violation -> suspected: the point is worse than the centre by more than the practical threshold and by more than
  a one-sided t prediction limit at `suspect_confidence` (for pass@1, the exact McNemar test must agree too).
- Confirmation -> active: the next run (or a rerun) has not gone back (it is still at least half-way to the point
  limit and, unless it is a violation itself, not far less bad than the episode so far), and the mean of the
  episode's points is worse than the centre by more than the practical threshold and a t limit for a mean of m
  points at `confidence`. Two stages let a 10% drop at 2% noise turn active within two
  runs while stable series raise fewer than 1 active alert per 100 runs (bench/alert_quality.py).
- An episode whose next point goes back is an outlier (if it was suspected) or resolved (if it was active). An
  annotation closes any open episode as resolved and restarts the baseline at the annotated point.
Episode points stay out of the baseline, so a regression cannot drag the baseline down with it; outliers join it
once they have gone back (median and MAD shrug them off, and dropping them would bias the spread low).

Example:
    result = evaluate_series(points, DEFAULT_RULES["decode_tokens_per_s"])
    result.verdicts[-1].state, result.open_alert
"""
from __future__ import annotations

import datetime as dt
import fnmatch
import math
import statistics
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from functools import lru_cache
from pathlib import Path
from typing import Literal

from core.errors import UserError

State = Literal["insufficient_data", "ok", "suspected", "active", "resolved", "outlier"]
AlertState = Literal["suspected", "active", "resolved", "outlier"]
MAD_TO_SD = 1.4826  # 1 / Phi^-1(3/4): MAD -> standard deviation under normal noise
# A MAD-based sd carries about as much information as an ordinary sd from 37% of the points (its asymptotic
# efficiency), so the t quantile uses 0.37 (n - 1) degrees of freedom; with n - 1 the false alerts came out ~2x too many.
MAD_EFFICIENCY = 0.37
# An episode's next run "has not gone back" while it is still this fraction of the point limit towards the bad side:
# loose enough that a real 10% drop at 2% noise keeps its second run, strict enough that a lone dip reverts.
HOLD = 0.5
CONSISTENT_Z = 4.0  # how much less bad than the episode so far (in robust sds) the next run may be and still continue it


@dataclass(frozen=True)
class Point:
    """One pair of runs. `candidate` and `baseline` are the metric on each device (tokens/s, or pass@1)."""

    at: dt.datetime
    candidate: float
    baseline: float
    candidate_run: str
    baseline_run: str
    annotation: str | None = None  # an intended change at this run: restarts the baseline here
    # pass@1: (b, c) = problems passed by the candidate only, by the baseline only (exact McNemar's inputs)
    discordant: tuple[int, int] | None = None

    def __post_init__(self):
        for name in ("candidate", "baseline"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < math.inf:  # NaN fails too
                raise ValueError(f"Point.{name} must be a finite number >= 0, got {v!r}")
        if self.discordant is not None and (len(self.discordant) != 2 or min(self.discordant) < 0):
            raise ValueError(f"Point.discordant must be two counts >= 0, got {self.discordant!r}")

    @property
    def ratio(self) -> float:
        """candidate / baseline; inf when only the baseline is 0, NaN when both are."""
        if self.baseline == 0:
            return math.nan if self.candidate == 0 else math.inf
        return self.candidate / self.baseline


@dataclass(frozen=True)
class MetricRule:
    """Thresholds for one metric. Fractions are of the ratio (0.05 = 5%); `mad_floor` is in log-ratio units."""

    threshold: float = 0.05  # practical: the smallest change worth an alert
    higher_is_better: bool = True  # False for latency-like metrics: a rise of the ratio is the regression
    min_points: int = 5  # accepted points before the robust baseline replaces the static guard
    window: int = 50  # most recent accepted points that make the baseline
    mad_floor: float = 0.01  # ~1%: run-to-run noise below that is not believable across two hosts
    suspect_confidence: float = 0.95  # one-sided, one point: low enough to see a 10% drop at 2% noise on run 1
    confidence: float = 0.9925  # one-sided, mean of the episode: keeps false active alerts rare (tuned by bench)
    guard: float = 0.20  # while data is insufficient: a change this large against the previous point
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


DEFAULT_RULES: dict[str, MetricRule] = {
    "first_token_tokens_per_s": MetricRule(),
    "decode_tokens_per_s": MetricRule(),
    # pass@1 moves in steps of 1/164: the paired test on per-problem outcomes tells a real drop from noise
    "pass_at_1": MetricRule(paired_alpha=0.05),
}


@dataclass(frozen=True)
class Verdict:
    """The judgement of one point. Ratios are candidate/baseline; `change_pct` is against the baseline ratio."""

    point: Point
    state: State
    ratio: float
    baseline_ratio: float | None  # the reference centre; None before there is one
    change_pct: float | None  # 100 x (ratio / baseline_ratio - 1)
    limit_pct: float | None  # the change_pct at the point limit (negative for higher-is-better metrics)
    moved: str | None  # episode points only: "candidate fell", "baseline rose", or both joined by "and"
    p_value: float | None  # pass@1: one-sided exact McNemar p of this pair of runs
    reason: str

    @property
    def candidate_run(self) -> str:
        return self.point.candidate_run

    @property
    def baseline_run(self) -> str:
        return self.point.baseline_run


@dataclass(frozen=True)
class Alert:
    """One episode: its violating points (oldest first) and the point that closed it (back in range, or annotated)."""

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
        """The run pair that opened the episode: the same on every re-evaluation, so the store can upsert on it."""
        return (self.opened.candidate_run, self.opened.baseline_run)


@dataclass(frozen=True)
class SeriesResult:
    verdicts: list[Verdict]  # one per point, in time order
    alerts: list[Alert]  # every episode, in time order; only the last can be open

    @property
    def open_alert(self) -> Alert | None:
        """The episode still open at the latest point (suspected or active), if any."""
        if self.alerts and self.alerts[-1].state in ("suspected", "active"):
            return self.alerts[-1]
        return None


def _log(x: float) -> float:
    return math.log(x) if x > 0 else (math.nan if math.isnan(x) else -math.inf)


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


@lru_cache(maxsize=None)
def _t(confidence: float, n: int) -> float:
    from scipy import stats  # here, not at the top: importing the CLI stays instant

    return float(stats.t.ppf(confidence, max(1.0, MAD_EFFICIENCY * (n - 1))))


def mcnemar_p(b: int, c: int) -> float:
    """One-sided exact McNemar p for "the candidate is worse": b candidate-only passes, c baseline-only passes."""
    from scipy import stats

    if b + c == 0:
        return 1.0
    return float(stats.binomtest(b, b + c, 0.5, alternative="less").pvalue)


class _Reference:
    """The baseline a point is judged against: the accepted points' (log ratio, log candidate, log baseline)."""

    def __init__(self, logs: Sequence[tuple[float, float, float]], rule: MetricRule):
        self.logs, self.rule, self.n = logs, rule, len(logs)
        if self.n < rule.min_points:  # static guard against the previous accepted point
            self.centre, self.spread = logs[-1][0], None
        else:
            y = [e[0] for e in logs]
            self.centre = statistics.median(y)
            self.spread = max(MAD_TO_SD * statistics.median([abs(v - self.centre) for v in y]), rule.mad_floor)

    def side_centres(self) -> tuple[float, float]:
        """Centres of log candidate and log baseline; only episodes need them, so computed on demand."""
        if self.spread is None:
            return self.logs[-1][1], self.logs[-1][2]
        return statistics.median(e[1] for e in self.logs), statistics.median(e[2] for e in self.logs)

    def limit(self, m: int | None = None) -> float:
        """Bad-direction distance that one point (m=None) or the mean of m episode points must pass."""
        rule = self.rule
        if self.spread is None:
            stat = rule.practical(rule.guard)
        else:
            # t prediction limit around a median: var(median) ~ (pi/2) sd^2 / n
            conf, var = (rule.suspect_confidence, 1.0) if m is None else (rule.confidence, 1.0 / m)
            stat = _t(conf, self.n) * self.spread * math.sqrt(var + math.pi / (2 * self.n))
        return max(stat, rule.practical())


def _moved(rule: MetricRule, ref: _Reference, episode: Sequence[tuple[float, float, float]]) -> str:
    """Name the side(s) behind the episode's change: each side's share of the bad move; >= 1/3 gets named."""
    centre_c, centre_b = ref.side_centres()
    bad_c = rule.badness(_mean([e[1] for e in episode]) - centre_c)
    bad_b = -rule.badness(_mean([e[2] for e in episode]) - centre_b)
    words = ("candidate fell", "baseline rose") if rule.higher_is_better else ("candidate rose", "baseline fell")
    if math.isinf(bad_c) or math.isinf(bad_b):  # a side at 0 (pass@1 with nothing passed)
        sides = [w for w, v in zip(words, (bad_c, bad_b)) if v == math.inf] or [words[0]]
    else:
        total = bad_c + bad_b
        sides = [w for w, v in zip(words, (bad_c, bad_b)) if v >= total / 3] if total > 0 else []
        sides = sides or [words[0] if bad_c >= bad_b else words[1]]
    return " and ".join(sides)


def _paired_p(episode: Sequence[Point]) -> float | None:
    """McNemar over the episode's pooled discordant counts (reruns add evidence); None if a point lacks them."""
    if any(p.discordant is None for p in episode):
        return None
    return mcnemar_p(sum(p.discordant[0] for p in episode), sum(p.discordant[1] for p in episode))


def evaluate_series(points: Iterable[Point], rule: MetricRule) -> SeriesResult:
    """Judge every point of one series in time order and collect the alert episodes.

    Pure and deterministic, so the store can re-run it over the whole series after each push; `Alert.identity`
    names the same episode each time. Annotating a past point can make an episode vanish: the store closes it then.
    """
    points = sorted(points, key=lambda p: p.at)
    logs = [(_log(p.ratio), _log(p.candidate), _log(p.baseline)) for p in points]
    verdicts: list[Verdict] = []
    episodes: list[tuple[list[int], int | None, AlertState]] = []  # (episode indices, closing index, final state)
    accepted: list[int] = []
    episode: list[int] = []  # the open episode's point indices

    def significant(idx: Sequence[int]) -> tuple[bool, float | None]:
        if rule.paired_alpha is None:
            return True, None
        p = _paired_p([points[j] for j in idx])
        return p is not None and p < rule.paired_alpha, p

    def close(closing: int | None, state: AlertState) -> None:
        episodes.append((list(episode), closing, state))
        if state == "outlier":
            accepted.extend(j for j in episode if math.isfinite(logs[j][0]))
            for j in episode:
                verdicts[j] = replace(verdicts[j], state="outlier", reason=verdicts[j].reason + "; went back: outlier")
        episode.clear()

    for i, p in enumerate(points):
        y = logs[i][0]
        if p.annotation is not None:
            if episode:
                close(i, "resolved")
            accepted.clear()
        ref = _Reference([logs[j] for j in accepted[-rule.window:]], rule) if accepted else None
        keep = math.isfinite(y)  # a ratio with a zero side can alert but never becomes the baseline
        if math.isnan(y) or ref is None:
            why = ("ratio undefined (both values are 0)" if math.isnan(y) else
                   f"baseline restarted: {p.annotation}" if p.annotation is not None else "first point of the series")
            verdicts.append(Verdict(p, "insufficient_data", p.ratio, None, None, None, None, None, why))
            if keep:
                accepted.append(i)
            continue

        bad = rule.badness(y - ref.centre)
        limit = ref.limit()
        sig, p_value = significant([i])
        change = 100 * math.expm1(y - ref.centre)  # -100 when the candidate is 0
        summary = (f"ratio {p.ratio:.4g} vs baseline {math.exp(ref.centre):.4g}: {change:+.1f}% "
                   f"(limit {rule.limit_pct(limit):+.1f}%{', static guard' if ref.spread is None else ''}"
                   f"{'' if p_value is None else f', McNemar p={p_value:.2g}'})")

        def verdict(state: State, why: str, moved: str | None = None) -> Verdict:
            return Verdict(p, state, p.ratio, math.exp(ref.centre), change, rule.limit_pct(limit), moved,
                           p_value, why)

        if episode:
            was_active = verdicts[episode[-1]].state == "active"
            held = bad > HOLD * limit  # not gone back
            if held and not was_active and bad <= limit:
                # a step change looks alike on each run; a run within the limit yet far less bad than the episode
                # so far means the episode was a lone dip (-20% then -3% must not average into an -11% regression)
                so_far = rule.badness(_mean([logs[j][0] for j in episode]) - ref.centre)
                tol = limit if ref.spread is None else CONSISTENT_Z * ref.spread * math.sqrt(1 + 1 / len(episode))
                held = so_far - bad <= tol
            if held:  # this run keeps, or confirms, the episode
                episode.append(i)
                ep = [logs[j] for j in episode]
                state: State = "active"
                if not was_active:
                    mean_bad = rule.badness(_mean([e[0] for e in ep]) - ref.centre)
                    confirmed = mean_bad > ref.limit(len(ep)) and significant(episode)[0]
                    state = "active" if confirmed else "suspected"
                verdicts.append(verdict(state, f"{summary}: {state}", _moved(rule, ref, ep)))
                continue
            close(i, "resolved" if was_active else "outlier")
            if was_active:
                verdicts.append(verdict("resolved", f"{summary}: back in range"))
                if keep:
                    accepted.append(i)
                continue
        # no open episode (any more): this run on its own
        if bad > limit and sig:
            episode.append(i)
            verdicts.append(verdict("suspected", f"{summary}: suspected", _moved(rule, ref, [logs[i]])))
            continue
        verdicts.append(verdict("insufficient_data" if ref.spread is None else "ok", summary))
        if keep:
            accepted.append(i)

    if episode:
        episodes.append((list(episode), None, verdicts[episode[-1]].state))  # still open
    alerts = [Alert(state, tuple(verdicts[j] for j in idx), verdicts[c] if c is not None else None)
              for idx, c, state in episodes]
    return SeriesResult(verdicts, alerts)


# --- series identity, documents ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class SeriesKey:
    """What one series is about. `str()` is the path suppressions match: fingerprint/metric/pair[/bsN]."""

    fingerprint: str
    metric: str
    candidate_device: str
    baseline_device: str
    batch_size: int | None = None  # speed metrics; None for pass@1 (HumanEval's batch is in the fingerprint)

    def __str__(self) -> str:
        path = f"{self.fingerprint}/{self.metric}/{self.candidate_device}-vs-{self.baseline_device}"
        return path if self.batch_size is None else f"{path}/bs{self.batch_size}"


def _finished(doc: Mapping) -> dt.datetime:
    return dt.datetime.fromisoformat(doc["finished_at"].replace("Z", "+00:00"))


def _problem_outcomes(doc: Mapping) -> dict[str, bool] | None:
    """task_id -> passed, where a problem with several samples passes when at least half of them do."""
    results = (doc.get("humaneval") or {}).get("results")
    if not results:
        return None
    tally: dict[str, list[int]] = {}
    for r in results:
        t = tally.setdefault(r["task_id"], [0, 0])
        t[0] += bool(r["passed"])
        t[1] += 1
    return {task: 2 * passed >= n for task, (passed, n) in tally.items()}


def point_from_documents(candidate: Mapping, baseline: Mapping, metric: str, batch_size: int | None = None,
                         annotation: str | None = None) -> Point | None:
    """One series point from two run documents (core/rundoc.py); None when either run lacks the metric.

    Speed metrics take the median of the perf record at `batch_size`; pass_at_1 takes pass@1 and, where both runs
    stored per-problem results, the discordant counts over the problems both ran.
    """
    fps = (candidate["job"]["fingerprint"], baseline["job"]["fingerprint"])
    if fps[0] != fps[1]:
        raise UserError(f"runs {candidate['run_id']} and {baseline['run_id']} are different jobs "
                        f"(fingerprints {fps[0]} and {fps[1]}): only runs of the same job are compared")
    if metric == "pass_at_1":
        values = [((d.get("humaneval") or {}).get("pass_at_k") or {}).get("1") for d in (candidate, baseline)]
        outcomes = [_problem_outcomes(d) for d in (candidate, baseline)]
        discordant = None
        if outcomes[0] is not None and outcomes[1] is not None:
            both = outcomes[0].keys() & outcomes[1].keys()
            discordant = (sum(outcomes[0][t] and not outcomes[1][t] for t in both),
                          sum(outcomes[1][t] and not outcomes[0][t] for t in both))
    else:
        values = []
        for d in (candidate, baseline):
            rec = next((r for r in d["perf"] if r["batch_size"] == batch_size), None)
            values.append((rec.get(metric) or {}).get("median") if rec else None)
        discordant = None
    if any(v is None for v in values):
        return None
    return Point(max(_finished(candidate), _finished(baseline)), float(values[0]), float(values[1]),
                 candidate["run_id"], baseline["run_id"], annotation, discordant)


# --- thresholds file and suppressions ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Suppression:
    """Silence alerts whose series path matches `pattern` until `until` (aware datetime).

    The pattern is matched segment by segment with shell wildcards; fewer segments match a prefix, so
    "*/decode_tokens_per_s/910B3-vs-A100" covers every batch size of that metric and pair.
    """

    pattern: str
    until: dt.datetime
    reason: str = ""

    def matches(self, key: SeriesKey | str) -> bool:
        want, have = self.pattern.split("/"), str(key).split("/")
        return len(want) <= len(have) and all(fnmatch.fnmatchcase(h, w) for w, h in zip(want, have))


def suppressed_by(key: SeriesKey | str, at: dt.datetime, suppressions: Iterable[Suppression]) -> Suppression | None:
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


_RULE_TYPES = {f.name: f.type for f in fields(MetricRule)}  # annotations are strings (future import)


def _typed(value, type_name: str, where: str):
    if type_name.startswith("bool"):
        ok = isinstance(value, bool)
    elif type_name.startswith("int"):
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:  # float: TOML writes 1 for 1.0 often enough to accept ints
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    if not ok:
        raise UserError(f"{where}: expected {type_name.split(' ')[0]}, got {type(value).__name__} {value!r}")
    return value


def parse_config(data: Mapping) -> AlertConfig:
    """Validate a parsed thresholds file: [metrics.NAME] tables of MetricRule keys, [[suppress]] entries."""
    unknown = set(data) - {"metrics", "suppress"}
    if unknown:
        raise UserError(f"unknown key '{sorted(unknown)[0]}' (allowed: metrics, suppress)")
    rules = dict(DEFAULT_RULES)
    metrics = data.get("metrics", {})
    if not isinstance(metrics, dict):
        raise UserError("metrics: expected tables such as [metrics.decode_tokens_per_s]")
    for metric, table in metrics.items():
        if metric not in DEFAULT_RULES:
            raise UserError(f"unknown metric 'metrics.{metric}' (known: {', '.join(DEFAULT_RULES)})")
        if not isinstance(table, dict):
            raise UserError(f"metrics.{metric}: expected a table")
        for key in table:
            if key not in _RULE_TYPES:
                raise UserError(f"unknown key 'metrics.{metric}.{key}' (allowed: {', '.join(_RULE_TYPES)})")
        values = {k: _typed(v, _RULE_TYPES[k], f"metrics.{metric}.{k}") for k, v in table.items()}
        try:
            rules[metric] = replace(DEFAULT_RULES[metric], **values)
        except ValueError as e:
            raise UserError(f"metrics.{metric}: {e}") from None
    entries = data.get("suppress", [])
    if not isinstance(entries, list):
        raise UserError("suppress: expected [[suppress]] entries")
    suppressions = []
    for n, entry in enumerate(entries):
        where = f"suppress[{n}]"
        if not isinstance(entry, dict):
            raise UserError(f"{where}: expected a table")
        unknown = set(entry) - {"pattern", "until", "reason"}
        if unknown:
            raise UserError(f"unknown key '{where}.{sorted(unknown)[0]}' (allowed: pattern, until, reason)")
        for key in ("pattern", "until"):
            if key not in entry:
                raise UserError(f"{where}: missing required key '{key}'")
        pattern, until, reason = entry["pattern"], entry["until"], entry.get("reason", "")
        if not isinstance(pattern, str) or not pattern or len(pattern.split("/")) > 4:
            raise UserError(f"{where}.pattern: expected \"fingerprint/metric/CAND-vs-BASE[/bsN]\" with wildcards, "
                            f"got {pattern!r}")
        if not isinstance(until, dt.datetime) or until.tzinfo is None:
            raise UserError(f"{where}.until: expected a date-time with an offset, e.g. 2025-07-01T00:00:00Z; "
                            f"got {until!r}")
        if not isinstance(reason, str):
            raise UserError(f"{where}.reason: expected a string")
        suppressions.append(Suppression(pattern, until, reason))
    return AlertConfig(rules, tuple(suppressions))


def load_config(path: str | Path | None) -> AlertConfig:
    """Read the thresholds file (TOML); None gives the defaults. Errors are one line naming the file and key."""
    if path is None:
        return AlertConfig(dict(DEFAULT_RULES))
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"alert config not found: {path}") from None
    except OSError as e:
        raise UserError(f"cannot read alert config {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path}: invalid TOML: {e}") from None
    try:
        return parse_config(data)
    except UserError as e:
        raise UserError(f"{path}: {e}") from None
