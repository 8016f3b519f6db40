"""Regression alerts in the store: build each series from stored runs, judge it (db/detect.py), keep the alerts,
and report which changed state so they can be delivered (runner/webhook.py).

Series points: runs of the two devices for one fingerprint are merged in time order; each run, once both sides
have one, makes a point pairing it with the other side's latest run. So a new candidate run and a new baseline
run each add a point, and "the baseline rose" is seen as soon as the baseline's run lands.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from db.detect import Alert as Episode
from db.detect import AlertConfig, Point, SeriesKey, evaluate_series
from db.models import Alert, Annotation, Run, utc

SPEED_METRICS = ("first_token_tokens_per_s", "decode_tokens_per_s")
DEFAULT_PAIRS = (("910B3", "A100"),)


@dataclass(frozen=True)
class Change:
    """An alert whose state changed in this evaluation (what a webhook is sent for)."""

    alert_id: int
    key: SeriesKey
    previous: str | None  # None: new alert
    episode: Episode


def _outcomes(run: Run) -> dict[str, bool] | None:
    """task_id -> passed (a problem with several samples passes when at least half do)."""
    if not run.problems:
        return None
    tally: dict[str, list[int]] = {}
    for p in run.problems:
        t = tally.setdefault(p.task_id, [0, 0])
        t[0] += p.passed
        t[1] += 1
    return {task: 2 * k >= n for task, (k, n) in tally.items()}


def _value(run: Run, metric: str, batch_size: int | None) -> float | None:
    if metric == "pass_at_1":
        return run.accuracy.pass_at_1 if run.accuracy else None
    rec = next((r for r in run.perf if r.batch_size == batch_size), None)
    return getattr(rec, metric) if rec else None


def series_points(runs: list[Run], key: SeriesKey, notes: dict[str, str]) -> list[Point]:
    """Points of one series from the runs of its fingerprint (any order); `notes`: run id -> annotation."""
    latest: dict[str, Run] = {}
    points, annotated = [], set()
    for run in sorted(runs, key=lambda r: (utc(r.finished_at), r.id)):
        if run.device_class not in (key.candidate_device, key.baseline_device):
            continue
        latest[run.device_class] = run
        cand, base = latest.get(key.candidate_device), latest.get(key.baseline_device)
        if cand is None or base is None:
            continue
        c, b = _value(cand, key.metric, key.batch_size), _value(base, key.metric, key.batch_size)
        if c is None or b is None:
            continue
        discordant = None
        if key.metric == "pass_at_1":
            oc, ob = _outcomes(cand), _outcomes(base)
            if oc is not None and ob is not None:
                both = oc.keys() & ob.keys()
                discordant = (sum(oc[t] and not ob[t] for t in both), sum(ob[t] and not oc[t] for t in both))
        # an annotation applies to the first point that contains its run
        note = notes.get(run.id) if run.id not in annotated else None
        annotated.add(run.id)
        points.append(Point(utc(run.finished_at), float(c), float(b), cand.id, base.id, note, discordant))
    return points


def series_keys(runs: list[Run], fingerprint: str, pair: tuple[str, str]) -> list[SeriesKey]:
    cand, base = pair
    sizes = {d: {r.batch_size for run in runs if run.device_class == d for r in run.perf} for d in pair}
    keys = [SeriesKey(fingerprint, m, cand, base, bs) for bs in sorted(sizes[cand] & sizes[base])
            for m in SPEED_METRICS]
    return keys + [SeriesKey(fingerprint, "pass_at_1", cand, base)]


def _store(session: Session, key: SeriesKey, episode: Episode, now: dt.datetime) -> Change | None:
    c_run, b_run = episode.identity
    row = session.scalar(select(Alert).where(Alert.series == str(key), Alert.opened_candidate_run == c_run,
                                             Alert.opened_baseline_run == b_run))
    if row is not None and row.resolved_manually:
        return None
    latest = episode.latest
    values = dict(state=episode.state, moved=next((v.moved for v in episode.verdicts if v.moved), None),
                  baseline_ratio=episode.opened.baseline_ratio, ratio=latest.ratio, change_pct=latest.change_pct,
                  reason=latest.reason, latest_candidate_run=latest.candidate_run,
                  latest_baseline_run=latest.baseline_run)
    if row is None:
        row = Alert(series=str(key), fingerprint=key.fingerprint, metric=key.metric,
                    candidate_device=key.candidate_device, baseline_device=key.baseline_device,
                    batch_size=key.batch_size, opened_candidate_run=c_run, opened_baseline_run=b_run,
                    acknowledged=False, resolved_manually=False, opened_at=now, updated_at=now, **values)
        session.add(row)
        session.flush()
        return Change(row.id, key, None, episode)
    previous = row.state
    for name, value in values.items():
        setattr(row, name, value)
    if previous != episode.state:
        row.updated_at = now
        return Change(row.id, key, previous, episode)
    return None


def evaluate(session: Session, config: AlertConfig, fingerprints: list[str] | None = None,
             pairs=DEFAULT_PAIRS) -> list[Change]:
    """Re-judge every series of the given fingerprints (all when None); returns the alerts whose state changed."""
    now = dt.datetime.now(dt.timezone.utc)
    devices = sorted({d for pair in pairs for d in pair})
    stmt = (select(Run).where(Run.device_class.in_(devices))
            .options(selectinload(Run.perf), selectinload(Run.accuracy), selectinload(Run.problems)))
    if fingerprints is not None:
        stmt = stmt.where(Run.fingerprint.in_(fingerprints))
    by_fp: dict[str, list[Run]] = {}
    for run in session.scalars(stmt):
        by_fp.setdefault(run.fingerprint, []).append(run)
    notes = {a.run_id: a.note for a in session.scalars(select(Annotation).order_by(Annotation.created_at))}
    changes = []
    for fp, runs in by_fp.items():
        for pair in pairs:
            for key in series_keys(runs, fp, pair):
                result = evaluate_series(series_points(runs, key, notes), config.rule(key.metric))
                seen = set()
                for episode in result.alerts:
                    seen.add(episode.identity)
                    change = _store(session, key, episode, now)
                    if change:
                        changes.append(change)
                # an open alert whose episode no longer exists (e.g. a run was annotated) is over
                for row in session.scalars(select(Alert).where(Alert.series == str(key),
                                                               Alert.state.in_(("suspected", "active")))):
                    if (row.opened_candidate_run, row.opened_baseline_run) not in seen:
                        row.state, row.updated_at = "resolved", now
    return changes


def open_alerts(session: Session) -> list[Alert]:
    return list(session.scalars(select(Alert).where(Alert.state.in_(("suspected", "active")))
                                .order_by(Alert.updated_at.desc())))
