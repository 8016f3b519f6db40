"""The fleet job queue in the store: one job per device class, claimed by agents, heartbeated, finished or retried.

Life of a job: queued -> running (an agent claimed it) -> done (its run is stored) | failed (attempts exhausted);
`runner jobs cancel` moves a queued or running job to cancelled. Every claim carries a random token and every later
write by the agent names it, so an agent whose job was taken away (it stopped heartbeating and the job was
requeued, or the job was cancelled) cannot touch the job's new owner.

Claiming is one UPDATE whose row is picked by a sub-select: `FOR UPDATE SKIP LOCKED` on PostgreSQL, so concurrent
agents take different rows without waiting on each other; on SQLite (one writer at a time) the single statement is
atomic, and `state = 'queued'` in its WHERE makes a lost race update nothing.

Times come from the database server on PostgreSQL (`now()`), so hosts with skewed clocks agree on which heartbeat
is stale; a SQLite store lives on one host, whose UTC clock then plays the server.

Example:
    ids = enqueue(engine, load_spec("jobs/smoke.toml"), ["910B3", "A100"])
    claim = claim_next(engine, "910B3", agent="host-1:4242")   # None when nothing is queued for 910B3
    ... run it, push the run ...
    complete(engine, claim.job_id, claim.token, run_id)
"""
from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Iterable, Sequence

from sqlalchemy import and_, case, exists, func, literal, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from db.engine import session_scope
from db.models import QueueJob, Run, utc
from core.errors import UserError

STATES = ("queued", "running", "done", "failed", "cancelled")
FINAL = ("done", "failed", "cancelled")
ERROR_CHARS = 2000  # a traceback's last line is enough; the agent's log has the rest

_jobs = QueueJob.__table__
_runs = Run.__table__


@dataclass(frozen=True)
class Claim:
    """A job this agent holds: what to run and the token that proves the claim."""

    job_id: int
    token: str
    device_class: str
    job_name: str
    fingerprint: str
    spec: dict
    attempt: int  # 1 for the first claim
    max_attempts: int


def _now(session: Session):
    if session.get_bind().dialect.name == "postgresql":
        return func.now()  # the server's clock, shared by every host
    return dt.datetime.now(dt.timezone.utc)


def _held(job_id: int, token: str):
    return and_(_jobs.c.id == job_id, _jobs.c.claim_token == token, _jobs.c.state == "running")


def enqueue(engine: Engine, spec, device_classes: Sequence[str], max_attempts: int = 3) -> list[int]:
    """One queued job per device class (duplicates dropped); returns their ids in the order given."""
    if max_attempts < 1:
        raise UserError(f"a job needs at least one attempt: max_attempts is {max_attempts}")
    if not device_classes:
        raise UserError("a job needs at least one device class to run on")
    with session_scope(engine) as session:
        now = _now(session)
        rows = [QueueJob(device_class=d, job_name=spec.name, fingerprint=spec.fingerprint, spec=spec.to_dict(),
                         state="queued", attempts=0, max_attempts=max_attempts, created_at=now)
                for d in dict.fromkeys(device_classes)]
        session.add_all(rows)
        session.flush()
        return [r.id for r in rows]


def claim_next(engine: Engine, device_class: str, agent: str) -> Claim | None:
    """Claim the oldest queued job of this device class, or None when there is none."""
    pick = _jobs.alias("pick")  # an alias, so the sub-select is not correlated with the UPDATE's own table
    oldest = (select(pick.c.id).where(pick.c.state == "queued", pick.c.device_class == device_class)
              .order_by(pick.c.id).limit(1).with_for_update(skip_locked=True).scalar_subquery())
    token = str(uuid.uuid4())
    with session_scope(engine) as session:
        now = _now(session)
        stmt = (update(_jobs).where(_jobs.c.id == oldest, _jobs.c.state == "queued")
                .values(state="running", attempts=_jobs.c.attempts + 1, claimed_by=agent, claim_token=token,
                        claimed_at=now, heartbeat_at=now, run_id=None)
                .returning(_jobs.c.id, _jobs.c.job_name, _jobs.c.fingerprint, _jobs.c.spec, _jobs.c.attempts,
                           _jobs.c.max_attempts))
        row = session.execute(stmt).first()
    if row is None:
        return None
    return Claim(row.id, token, device_class, row.job_name, row.fingerprint, row.spec, row.attempts,
                 row.max_attempts)


def heartbeat(engine: Engine, claims: Iterable[Claim]) -> list[Claim]:
    """Mark these claims alive; returns the ones that are no longer ours (cancelled, or requeued as stale)."""
    lost = []
    with session_scope(engine) as session:
        now = _now(session)
        for c in claims:
            if session.execute(update(_jobs).where(_held(c.job_id, c.token)).values(heartbeat_at=now)).rowcount == 0:
                lost.append(c)
    return lost


def attach_run(engine: Engine, job_id: int, token: str, run_id: str) -> bool:
    """Record the run's UUID on the job before pushing, so a job whose agent dies right after the push is found done
    (see requeue_stale) rather than run again."""
    with session_scope(engine) as session:
        return session.execute(update(_jobs).where(_held(job_id, token)).values(run_id=run_id)).rowcount == 1


def complete(engine: Engine, job_id: int, token: str, run_id: str) -> bool:
    """The job's run is in the store: done. Also when the claim was lost meanwhile because a store outage outlasted
    the stale limit and the job went back to queued (or failed on its last attempt): its run exists, so it must not
    run again. A job that another agent is running now, or that was cancelled, is left alone. False then."""
    with session_scope(engine) as session:
        now = _now(session)
        done = dict(state="done", run_id=run_id, finished_at=now, error=None)
        if session.execute(update(_jobs).where(_held(job_id, token)).values(**done)).rowcount == 1:
            return True
        lost = and_(_jobs.c.id == job_id, _jobs.c.state.in_(("queued", "failed")))
        return session.execute(update(_jobs).where(lost).values(**done)).rowcount == 1


def fail(engine: Engine, claim: Claim, error: str) -> str | None:
    """The attempt failed: queued again while attempts remain, else failed. Returns the new state (None: not ours)."""
    exhausted = _jobs.c.attempts >= _jobs.c.max_attempts  # attempts counts this claim already
    with session_scope(engine) as session:
        now = _now(session)
        stmt = (update(_jobs).where(_held(claim.job_id, claim.token))
                .values(state=case((exhausted, "failed"), else_="queued"), error=error[-ERROR_CHARS:],
                        finished_at=case((exhausted, now), else_=None),
                        claimed_by=case((exhausted, _jobs.c.claimed_by), else_=None),  # failed: who tried last
                        claim_token=None, claimed_at=None, heartbeat_at=None, run_id=None)
                .returning(_jobs.c.state))
        return session.scalar(stmt)


def release(engine: Engine, claim: Claim) -> bool:
    """Hand the job back untouched (the agent is stopping): queued again, and this attempt does not count."""
    with session_scope(engine) as session:
        stmt = (update(_jobs).where(_held(claim.job_id, claim.token))
                .values(state="queued", attempts=_jobs.c.attempts - 1, claimed_by=None, claim_token=None,
                        claimed_at=None, heartbeat_at=None, run_id=None))
        return session.execute(stmt).rowcount == 1


def requeue_stale(engine: Engine, stale_after_s: float, keep_tokens: Iterable[str] = ()) -> dict[str, list[int]]:
    """Running jobs whose agent has not heartbeaten for `stale_after_s`: done if their run already reached the store,
    failed if that was their last attempt, else queued again. `keep_tokens`: the caller's own claims, never stale.

    Returns {"done": ids, "failed": ids, "queued": ids}.
    """
    keep = list(keep_tokens)
    out = {}
    with session_scope(engine) as session:
        now = _now(session)
        stale = and_(_jobs.c.state == "running", _jobs.c.heartbeat_at < now - dt.timedelta(seconds=stale_after_s))
        if keep:
            stale = and_(stale, _jobs.c.claim_token.not_in(keep))
        why = literal("agent ") + _jobs.c.claimed_by + literal(" stopped heartbeating")
        pushed = exists().where(_runs.c.id == _jobs.c.run_id)
        steps = (("done", and_(stale, pushed), dict(state="done", finished_at=now, error=None)),
                 ("failed", and_(stale, _jobs.c.attempts >= _jobs.c.max_attempts),
                  dict(state="failed", finished_at=now, error=why, claim_token=None, run_id=None)),
                 ("queued", stale, dict(state="queued", error=why, claimed_by=None, claim_token=None,
                                        claimed_at=None, heartbeat_at=None, run_id=None)))
        for state, where, values in steps:
            out[state] = list(session.scalars(update(_jobs).where(where).values(**values).returning(_jobs.c.id)))
    return out


def cancel(engine: Engine, job_id: int) -> str:
    """Cancel a queued or running job; returns the state it had. A running job's agent finishes the run it is on
    (a measurement is never thrown away) but the job stays cancelled and is not retried."""
    with session_scope(engine) as session:
        # write first (SQLite: a read before the write could lose its snapshot to a concurrent agent)
        stmt = (update(_jobs).where(_jobs.c.id == job_id, _jobs.c.state.in_(("queued", "running")))
                .values(state="cancelled", finished_at=_now(session)).returning(_jobs.c.claimed_by))
        row = session.execute(stmt).first()
        if row is not None:
            return "queued" if row.claimed_by is None else "running"  # only a running job has an agent
        state = session.scalar(select(_jobs.c.state).where(_jobs.c.id == job_id))
    if state is None:
        raise UserError(f"no job {job_id} in the store (see `runner jobs`)")
    raise UserError(f"job {job_id} is already {state}; only queued or running jobs can be cancelled")


def list_jobs(session: Session, state: str | None = None, device_class: str | None = None,
              limit: int = 100) -> list[dict]:
    """The newest jobs first, as plain dicts (id, device, state, attempts, run id, ...)."""
    if state is not None and state not in STATES:
        raise UserError(f"unknown job state {state!r}: one of {', '.join(STATES)}")
    stmt = select(QueueJob).order_by(QueueJob.id.desc()).limit(limit)
    if state is not None:
        stmt = stmt.where(QueueJob.state == state)
    if device_class is not None:
        stmt = stmt.where(QueueJob.device_class == device_class)
    cols = ("id", "device_class", "state", "attempts", "max_attempts", "run_id", "job_name", "fingerprint",
            "claimed_by", "created_at", "heartbeat_at", "finished_at", "error")
    return [{c: (utc(v) if isinstance(v, dt.datetime) else v) for c in cols for v in [getattr(j, c)]}
            for j in session.scalars(stmt)]


def counts(session: Session) -> dict[str, int]:
    """Jobs per state (every state present, zeros included)."""
    found = dict(session.execute(select(QueueJob.state, func.count()).group_by(QueueJob.state)).all())
    return {s: found.get(s, 0) for s in STATES}
