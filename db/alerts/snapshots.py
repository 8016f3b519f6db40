"""Where alert judging of a job and device pair stood every EVERY runs judged: the `alert_series_snapshot` rows.

The checkpoint (db.alerts.checkpoint) lets an evaluation resume after the last run judged. A run that lands before
it (a host's outbox replaying runs pushed late; an A100 run that finished at 10:00 pushed after a 910B3 run that
finished at 10:05), an annotation at a run judged already, or a deleted run judged already changes the past: the
evaluation rewinds to the newest snapshot before the change and judges only the runs after it, instead of the whole
job. A snapshot is a checkpoint without the annotation watermark and the rules (the checkpoint's hold for it: an
annotation or rule change before it rewinds further or judges everything anew, which drops it). It holds when the
runs of each device up to its last run are as many as it judged (`valid`).

Snapshots sit at fixed places, after run EVERY x k of the job in pairing order, so judging after each push and
judging once leave the same ones; a rewind drops those after the snapshot it resumes from and writes them again.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import delete, func, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.alerts import checkpoint
from db.alerts.checkpoint import Checkpoint
from db.alerts.config import AlertConfig
from db.alerts.series import measured, merged, series_keys
from db.models import AlertSeriesSnapshot as Snap
from db.models import Run, utc

EVERY = 32  # runs judged between snapshots: a rewind judges fewer than this many runs more than the change needs
VERSION = 1


def _where(fp: str, pair: tuple[str, str]):
    return (Snap.fingerprint == fp) & (Snap.candidate_device == pair[0]) & (Snap.baseline_device == pair[1])


def listing(session: Session, fp: str, pair: tuple[str, str]) -> list[tuple[int, tuple]]:
    """(seq, order key of its last run) of each snapshot of the pair, newest first."""
    stmt = select(Snap.seq, Snap.finished_at, Snap.pushed_at, Snap.run_id).where(_where(fp, pair))
    return [(seq, (utc(f), utc(p), r)) for seq, f, p, r in session.execute(stmt.order_by(Snap.seq.desc()))]


def valid(session: Session, job, seq: int, last: tuple, runs: dict[str, int]) -> bool:
    """Whether the runs up to `last` are still the ones the snapshot judged (as many of each device)."""
    upto = tuple_(Run.finished_at, Run.pushed_at, Run.id) <= tuple_(*last)
    counts = dict(session.execute(select(Run.device_class, func.count()).where(job & upto)
                                  .group_by(Run.device_class)).all())
    return sum(counts.values()) == seq and all(counts.get(d, 0) == n for d, n in runs.items())


def load(session: Session, fp: str, pair: tuple[str, str], seq: int, config: AlertConfig,
         annotation: int) -> Checkpoint | None:
    row = session.get(Snap, (fp, *pair, seq))
    d = row.data
    if d.get("version") != VERSION:
        return None
    series = {path: {"rule": checkpoint.rule_state(config.rule(path.split("/")[1])), "detector": state}
              for path, state in d["series"].items()}
    return Checkpoint((utc(row.finished_at), utc(row.pushed_at), row.run_id), d["latest"], d["runs"], annotation,
                      d["measured"], d["job_name"], series)


def drop_after(session: Session, fp: str, pair: tuple[str, str], seq: int) -> None:
    session.execute(delete(Snap).where(_where(fp, pair) & (Snap.seq > seq)))


@dataclass
class Mark:
    """A snapshot being written: after the judged run at `index`, with the series that exist then."""

    index: int
    seq: int
    run: object
    latest: dict[str, str]
    runs: dict[str, int]
    measured: dict
    paths: set[str]
    series: dict[str, dict] = field(default_factory=dict)


def marks(fp: str, pair: tuple[str, str], ordered: list, judged_ids: set[str] | None,
          base: Checkpoint | None) -> list[Mark]:
    """The snapshots the judged runs of `ordered` (pairing order; `judged_ids` None: all) pass, resuming at `base`."""
    latest = {}
    runs = dict(base.runs) if base else {d: 0 for d in pair}
    seen = base.measured if base else {}
    out, index = [], 0
    for r in ordered:
        latest[r.device_class] = r.id
        if judged_ids is not None and r.id not in judged_ids:
            continue
        runs[r.device_class] = runs.get(r.device_class, 0) + 1
        seen = merged(seen, measured([r]))
        seq = sum(runs.values())
        if seq % EVERY == 0:
            out.append(Mark(index, seq, r, dict(latest), dict(runs), seen,
                            {str(k) for k in series_keys(fp, pair, seen)}))
        index += 1
    return out


def write(session: Session, fp: str, pair: tuple[str, str], done: list[Mark]) -> None:
    if not done:
        return
    rows = [Snap(fingerprint=fp, candidate_device=pair[0], baseline_device=pair[1], seq=m.seq,
                 finished_at=utc(m.run.finished_at), pushed_at=utc(m.run.pushed_at), run_id=m.run.id,
                 data={"version": VERSION, "latest": m.latest, "runs": m.runs, "measured": m.measured,
                       "job_name": m.run.job_name, "series": m.series}) for m in done]
    try:
        with session.begin_nested():  # another evaluation of the job may write them first: theirs hold as well
            session.add_all(rows)
    except IntegrityError:
        pass


def rewind(session: Session, fp: str, pair: tuple[str, str], job, before: tuple | None, config: AlertConfig,
           annotation: int) -> Checkpoint | None:
    """The newest snapshot that still holds and ends strictly before the order key `before` (None: anywhere), as a
    checkpoint; None when there is none."""
    for seq, last in listing(session, fp, pair):
        if before is not None and last >= before:
            continue
        snap = load(session, fp, pair, seq, config, annotation)
        if snap is not None and valid(session, job, seq, last, snap.runs):
            return snap
    return None
