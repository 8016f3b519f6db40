"""The run listing of `runner runs`: the newest runs, in the order the comparison reads them (db/pairing.py).

Kept apart from db/queries.py, whose statistics pull in numpy: listing runs is a quick look that should start fast.
"""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Run, utc
from db.pairing import ORDER_BY


def newest(session: Session, limit: int = 20) -> list[dict]:
    """The newest `limit` runs, newest first: id, finished_at (UTC), device_class, job_name, fingerprint, source."""
    stmt = (select(Run.id, Run.finished_at, Run.device_class, Run.job_name, Run.fingerprint, Run.source)
            .order_by(*(c.desc() for c in ORDER_BY)).limit(limit))
    return [{**row._mapping, "finished_at": utc(row.finished_at)} for row in session.execute(stmt)]
