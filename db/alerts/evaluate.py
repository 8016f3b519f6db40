"""Regression alerts in the store: judge each series of stored runs (db.alerts.detect), keep one alert row per
episode, and report which rows changed state so they can be delivered (db.alerts.deliver).

Every evaluation re-judges whole series: detection is deterministic and a verdict depends only on earlier runs, so
judging after each push and judging once at the end leave the same rows. A row is upserted on (series, the run pair
that opened the episode); a row resolved by hand stays resolved.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from core.rules import DEFAULT_PAIR
from db.alerts.config import AlertConfig
from db.alerts.detect import Episode, evaluate_series
from db.alerts.series import SeriesKey, series_keys, series_points
from db.models import Alert, Annotation, Run
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
                    batch_size=key.batch_size, opened_candidate_run=c_run, opened_baseline_run=b_run,
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


def runs_by_job(session: Session, devices: list[str], fingerprints: list[str] | None = None) -> dict[str, list[Run]]:
    """The runs of these devices, with every record a series reads, by fingerprint (of the given ones; all if None)."""
    stmt = (select(Run).where(Run.device_class.in_(devices))
            .options(selectinload(Run.perf), selectinload(Run.accuracy), selectinload(Run.problems)))
    if fingerprints is not None:
        stmt = stmt.where(Run.fingerprint.in_(fingerprints))
    by_fp: dict[str, list[Run]] = {}
    for run in session.scalars(stmt):
        by_fp.setdefault(run.fingerprint, []).append(run)
    return by_fp


def annotations(session: Session) -> dict[str, str]:
    """run id -> the note annotated at it (the latest, when a run was annotated twice)."""
    return {a.run_id: a.note for a in session.scalars(select(Annotation).order_by(Annotation.created_at))}


def evaluate(session: Session, config: AlertConfig, fingerprints: list[str] | None = None,
             pairs: tuple[tuple[str, str], ...] = (DEFAULT_PAIR,)) -> list[Change]:
    """Re-judge every series of the given fingerprints (all when None); returns the alerts whose state changed."""
    now = dt.datetime.now(dt.timezone.utc)
    by_fp = runs_by_job(session, sorted({d for pair in pairs for d in pair}), fingerprints)
    notes = annotations(session)
    changes = []
    for fp, runs in by_fp.items():
        job_name = max(runs, key=order_key).job_name  # the name of its latest run
        for pair in pairs:
            for key in series_keys(runs, fp, pair):
                result = evaluate_series(series_points(runs, key, notes), config.rule(key.metric))
                seen = {episode.identity for episode in result.episodes}
                changes += filter(None, (_upsert(session, key, job_name, e, now) for e in result.episodes))
                # an open alert whose episode no longer exists (e.g. a run was annotated) is over
                for row in session.scalars(select(Alert).where(Alert.series == str(key), Alert.state.in_(OPEN))):
                    if (row.opened_candidate_run, row.opened_baseline_run) not in seen:
                        row.state, row.updated_at = "resolved", now
    return changes
