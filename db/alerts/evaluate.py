"""Regression alerts in the store: judge each series of stored runs (db.alerts.detect), keep one alert row per
episode, and report which rows changed state so they can be delivered (db.alerts.deliver).

Detection is deterministic and a verdict depends only on earlier runs, so judging after each push and judging once
at the end leave the same rows. An evaluation resumes each job and device pair from its checkpoint
(db.alerts.checkpoint) and judges only the runs that arrived since, reading their records with a few Core selects.
When the past changed (a run arrived out of order, a run already judged was annotated or deleted) it rewinds to the
newest snapshot before the change (db.alerts.snapshots) and judges the runs after it; it judges the whole job when
there is no checkpoint or no such snapshot, when a rule changed, or when asked to (`rebuild`). A row is upserted on
(series, the run pair that opened the episode); a row resolved by hand stays resolved.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.rules import DEFAULT_PAIR
from db.alerts import checkpoint, snapshots
from db.alerts.checkpoint import Checkpoint
from db.alerts.config import AlertConfig
from db.alerts.detect import Detector, Episode
from db.alerts.series import (RunData, SeriesKey, load_runs, measured, merged, notes_at, series_keys,
                              series_points)
from db.models import Alert, AlertSeriesState, Annotation, JobDevice, Run, utc
from db.pairing import order_key

OPEN = ("suspected", "active")


@dataclass(frozen=True)
class Change:
    """An alert whose state changed in this evaluation (what a webhook is sent for)."""

    alert_id: int
    key: SeriesKey
    job_name: str
    previous: str | None  # None: new alert
    episode: Episode


def _upsert(session: Session, key: SeriesKey, job_name: str, episode: Episode, now: dt.datetime) -> Change | None:
    c_run, b_run = episode.identity
    row = session.scalar(select(Alert).where(Alert.series == str(key), Alert.opened_candidate_run == c_run,
                                             Alert.opened_baseline_run == b_run))
    if row is not None and row.resolved_manually:
        return None
    latest = episode.latest
    values = dict(state=episode.state, moved=episode.moved, baseline_ratio=episode.opened.usual_ratio,
                  ratio=latest.ratio, change_pct=latest.change_pct, reason=episode.explanation,
                  latest_candidate_run=latest.candidate_run, latest_baseline_run=latest.baseline_run)
    if row is None:
        row = Alert(series=str(key), fingerprint=key.fingerprint, metric=key.metric,
                    candidate_device=key.candidate_device, baseline_device=key.baseline_device,
                    batch_size=key.batch_size, level=key.level, opened_candidate_run=c_run, opened_baseline_run=b_run,
                    acknowledged=False, resolved_manually=False, opened_at=now, updated_at=now, **values)
        session.add(row)
        session.flush()
        return Change(row.id, key, job_name, None, episode)
    previous = row.state
    for name, v in values.items():
        setattr(row, name, v)
    if previous != episode.state:
        row.updated_at = now
        return Change(row.id, key, job_name, previous, episode)
    return None


def _job(fingerprint: str, pair: tuple[str, str]):
    return (Run.fingerprint == fingerprint) & Run.device_class.in_(pair)


@dataclass
class Start:
    """Where an evaluation resumes: `base` (the checkpoint, or a snapshot before a change to the past when
    `rewound`), the runs it reads (each device's latest run at `base`, then the runs after it) and the ids of the
    runs it judges."""

    base: Checkpoint
    runs: list[RunData]
    new: set[str]
    rewound: bool


def _since(session: Session, fp: str, pair: tuple[str, str], ckpt: Checkpoint, config: AlertConfig,
           annotation: int) -> Start | None:
    """Where to resume: the checkpoint when it holds, else the newest snapshot before what changed
    (db.alerts.snapshots); None when neither does (judge the whole job)."""
    if any(s["rule"] != checkpoint.rule_state(config.rule(path.split("/")[1])) for path, s in ckpt.series.items()):
        return None
    job, last = _job(fp, pair), (utc(ckpt.last[0]), utc(ckpt.last[1]), ckpt.last[2])
    annotated = session.execute(select(Run.finished_at, Run.pushed_at, Run.id).join(
        Annotation, Annotation.run_id == Run.id).where(Annotation.id > ckpt.annotation, job))
    changed = min((k for k in map(order_key, annotated) if k <= last), default=None)
    if changed is None:
        new = _after(session, job, ckpt)
        counts = dict(session.execute(select(JobDevice.device_class, JobDevice.runs).where(
            JobDevice.fingerprint == fp, JobDevice.device_class.in_(pair))).all())
        if all(counts.get(d, 0) - sum(r.device_class == d for r in new) == ckpt.runs.get(d, 0) for d in pair):
            start = _start(session, ckpt, new, rewound=False) if new else Start(ckpt, [], set(), False)
            if start is not None:
                return start
    # a run arrived out of order, or a run judged already was annotated or deleted
    base = snapshots.rewind(session, fp, pair, job, changed, config, annotation)
    return None if base is None else _start(session, base, _after(session, job, base), rewound=True)


def _after(session: Session, job, base: Checkpoint) -> list[RunData]:
    """The runs of the job after `base`'s last run, in any order."""
    last = (utc(base.last[0]), utc(base.last[1]), base.last[2])
    return [r for r in load_runs(session, job & (Run.finished_at >= base.last[0])) if order_key(r) > last]


def _start(session: Session, base: Checkpoint, new: list[RunData], rewound: bool) -> Start | None:
    """Resume at `base` with its devices' latest runs as the other side of the new points; None when one of them
    is gone (deleted)."""
    before = load_runs(session, Run.id.in_(list(base.latest.values()))) if base.latest else []
    return Start(base, before + new, {r.id for r in new}, rewound) if len(before) == len(base.latest) else None


def _save(session: Session, fp: str, pair: tuple[str, str], ckpt: Checkpoint) -> None:
    row = session.get(AlertSeriesState, (fp, *pair))
    if row is not None:
        row.data = ckpt.to_json()
        return
    try:
        with session.begin_nested():  # another evaluation of the job may write it first: either checkpoint holds
            session.add(AlertSeriesState(fingerprint=fp, candidate_device=pair[0], baseline_device=pair[1],
                                         data=ckpt.to_json()))
    except IntegrityError:
        pass


def _evaluate_pair(session: Session, config: AlertConfig, fp: str, pair: tuple[str, str], annotation: int,
                   now: dt.datetime, rebuild: bool) -> list[Change]:
    row = None if rebuild else session.get(AlertSeriesState, (fp, *pair))
    ckpt = Checkpoint.from_json(row.data) if row is not None else None
    start = _since(session, fp, pair, ckpt, config, annotation) if ckpt is not None else None
    if start is None:  # the whole job, from the start
        snapshots.drop_after(session, fp, pair, 0)
        ckpt, runs = None, load_runs(session, _job(fp, pair))
        new, notes = None, notes_at(session, _job(fp, pair))
        if not runs:
            return []
    else:
        ckpt, runs, new = start.base, start.runs, start.new
        if start.rewound:  # the snapshots after it judged a past that changed
            snapshots.drop_after(session, fp, pair, sum(ckpt.runs.values()))
        elif not new:
            return []
        notes = notes_at(session, Run.id.in_(new))
    ordered = sorted(runs, key=order_key)
    judged = [r for r in ordered if new is None or r.id in new]
    seen = merged(ckpt.measured if ckpt else {}, measured(judged))
    latest = {r.device_class: r for r in ordered}
    job_name = ordered[-1].job_name
    keys = series_keys(fp, pair, seen)
    open_rows: dict[str, list[Alert]] = {}
    for a in session.scalars(select(Alert).where(Alert.series.in_([str(k) for k in keys]), Alert.state.in_(OPEN))):
        open_rows.setdefault(a.series, []).append(a)
    marks = snapshots.marks(fp, pair, ordered, new, ckpt)
    index = {r.id: i for i, r in enumerate(judged)}
    changes, states = [], {}
    for key in keys:
        rule = config.rule(key.metric)
        state = ckpt.series.get(str(key)) if ckpt else None
        det = checkpoint.resume(state["detector"], rule) if state else Detector(rule)
        pending = [m for m in marks if str(key) in m.paths]
        for point in series_points(runs, key, notes, new):
            while pending and pending[0].index < index[point.run()]:  # the state after the snapshot's run
                pending.pop(0).series[str(key)] = checkpoint.detector_state(det)
            det.feed(point)
        for m in pending:
            m.series[str(key)] = checkpoint.detector_state(det)
        episodes = det.episodes()
        changes += filter(None, (_upsert(session, key, job_name, e, now) for e in episodes))
        # an open alert whose episode no longer exists (e.g. a run was annotated) is over; episodes still open at the
        # checkpoint are among `episodes`, so this holds for a resumed series too
        ids = {e.identity for e in episodes}
        for a in open_rows.get(str(key), []):
            if (a.opened_candidate_run, a.opened_baseline_run) not in ids:
                a.state, a.updated_at = "resolved", now
        states[str(key)] = {"rule": checkpoint.rule_state(rule), "detector": checkpoint.detector_state(det)}
    snapshots.write(session, fp, pair, marks)
    end = ordered[-1]
    counts = {d: (ckpt.runs.get(d, 0) if ckpt else 0) + sum(r.device_class == d for r in judged) for d in pair}
    _save(session, fp, pair, Checkpoint((utc(end.finished_at), utc(end.pushed_at), end.id),
                                        {d: r.id for d, r in latest.items()}, counts, annotation, seen, job_name,
                                        states))
    return changes


def evaluate(session: Session, config: AlertConfig, fingerprints: list[str] | None = None,
             pairs: tuple[tuple[str, str], ...] = (DEFAULT_PAIR,), rebuild: bool = False) -> list[Change]:
    """Judge the series of the given fingerprints (all when None) up to their latest run, from their checkpoints
    (`rebuild`: from the start); returns the alerts whose state changed."""
    now = dt.datetime.now(dt.timezone.utc)
    if fingerprints is None:
        devices = sorted({d for pair in pairs for d in pair})
        fingerprints = list(session.scalars(select(Run.fingerprint).where(Run.device_class.in_(devices))
                                            .distinct().order_by(Run.fingerprint)))
    annotation = session.scalar(select(func.max(Annotation.id))) or 0
    changes = []
    for fp in fingerprints:
        for pair in pairs:
            changes += _evaluate_pair(session, config, fp, tuple(pair), annotation, now, rebuild)
    return changes

