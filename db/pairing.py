"""Pairing: which runs of two devices are compared with each other. The comparison table, the trend charts and the
alert series all pair runs through this module, so they never disagree about which run is "the latest".

Runs of one fingerprint are ordered by finished_at, then pushed_at, then run id (the tie-break: two runs that finish
in the same second are taken in the order they reached the store, and the id settles even that). The latest run of
a device is the last in that order. Walking the runs of a device pair in that order, every run that lands once both
devices have one makes a pair: the run that arrived, and the latest run of each device at that moment. So each
pair is the comparison table as it stood right after that run landed.

Example:
    for arrived, cand, base in paired(runs, "910B3", "A100"):
        print(arrived.id, cand.id, base.id)
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from typing import Protocol, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from db.models import Run, utc

# The tie-break as SQL, for queries that want only the latest run (ORDER BY ... DESC LIMIT 1).
ORDER_BY = (Run.finished_at, Run.pushed_at, Run.id)


class RunLike(Protocol):
    """An ORM Run or a Core row with these columns."""

    id: str
    device_class: str
    finished_at: dt.datetime
    pushed_at: dt.datetime


R = TypeVar("R", bound=RunLike)


def order_key(run: RunLike) -> tuple[dt.datetime, dt.datetime, str]:
    # utc(): SQLite hands back naive datetimes, PostgreSQL aware ones; both must order as instants
    return utc(run.finished_at), utc(run.pushed_at), run.id


def paired(runs: Iterable[R], candidate: str, baseline: str) -> Iterator[tuple[R, R, R]]:
    """(arrived, latest candidate run, latest baseline run) for each run of the pair once both devices have one.

    `runs` may hold other devices (skipped) and come in any order; they must share one fingerprint.
    """
    latest: dict[str, R] = {}
    for run in sorted((r for r in runs if r.device_class in (candidate, baseline)), key=order_key):
        latest[run.device_class] = run
        if candidate in latest and baseline in latest:
            yield run, latest[candidate], latest[baseline]


def latest_run(session: Session, fingerprint: str, device: str) -> Run | None:
    """The latest run of `device` for `fingerprint` (the last in pairing order), with its perf and accuracy loaded."""
    stmt = (select(Run).where(Run.fingerprint == fingerprint, Run.device_class == device)
            .order_by(*(c.desc() for c in ORDER_BY)).limit(1)
            .options(selectinload(Run.perf), selectinload(Run.accuracy)))
    return session.scalars(stmt).first()
