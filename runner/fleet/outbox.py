"""The local outbox: finished run documents that have not reached the store yet wait here and are replayed later.

An agent writes every finished run here *before* pushing it and removes it only once the run is in the store (and
its queue job is marked done), so a store that is down, or that dies in the middle of a push, or an agent killed
between the two, loses nothing. `runner push --outbox` or the next agent loop replays what is left; the push is
idempotent by the run's UUID, so replaying twice, or from two processes at once, stores the run once.

Layout of the directory ($DEVCOMPARE_OUTBOX, else <user data dir>/devcompare/outbox):
    <run_id>.json   the run document (format devcompare.run/1; `runner push FILE` takes it too)
    <run_id>.job    {"job_id": N, "token": "..."}: the queue job the run belongs to, marked done on replay
    rejected/       documents that can never be pushed (unreadable, invalid), set aside for a person
Several agents on one host may share the directory. A document is born locked (flock) by the agent that wrote it
and stays locked while that agent pushes it, so a replay elsewhere skips it; the kernel drops the lock when its
process ends, however it ends, and the document is then anyone's to replay.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from core import rundoc
from core.errors import StoreError
from core.files import write_atomic

ENV_VAR = "DEVCOMPARE_OUTBOX"


def directory(path: str | Path | None = None) -> Path:
    if path is not None:
        return Path(path)
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    from platformdirs import user_data_dir

    return Path(user_data_dir("devcompare")) / "outbox"


def _job_path(doc_path: Path) -> Path:
    return doc_path.with_suffix(".job")


@contextlib.contextmanager
def keep(doc: dict, job: tuple[int, str] | None = None, path: str | Path | None = None) -> Iterator[Path]:
    """Write a run document (and the queue job it belongs to) into the outbox; yields its path, locked against
    other replayers until the block ends. Whatever happens inside, the document stays until delivered.

        with outbox.keep(doc, (claim.job_id, claim.token)) as p:
            outbox.deliver(engine, p)   # a StoreError leaves it for the next replay
    """
    rundoc.validate(doc)
    where = directory(path)
    where.mkdir(parents=True, exist_ok=True)
    doc_path = where / f"{doc['run_id']}.json"
    if job is not None:  # the job file first: a document is never seen without its job
        write_atomic(_job_path(doc_path), json.dumps({"job_id": job[0], "token": job[1]}) + "\n")
    fd = write_atomic(doc_path, json.dumps(doc, indent=1) + "\n", lock=True)
    try:
        yield doc_path
    finally:
        os.close(fd)


def pending(path: str | Path | None = None) -> list[Path]:
    """Documents in the outbox, oldest first (some may be in the middle of a push by their agent)."""
    where = directory(path)
    if not where.is_dir():
        return []
    docs = []
    for p in where.glob("*.json"):
        with contextlib.suppress(FileNotFoundError):
            docs.append((p.stat().st_mtime, p.name, p))
    return [p for *_key, p in sorted(docs)]


@contextlib.contextmanager
def _claimed(doc_path: Path) -> Iterator[bool]:
    """Lock a pending document for delivery; False when another process holds it or it is already gone."""
    try:
        fd = os.open(doc_path, os.O_RDONLY)
    except FileNotFoundError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False  # its agent is pushing it right now
            return
        try:  # delivered and removed between our listing and our lock?
            still_there = os.fstat(fd).st_ino == os.stat(doc_path).st_ino
        except FileNotFoundError:
            still_there = False
        yield still_there
    finally:
        os.close(fd)


def waiting(path: str | Path | None = None) -> list[Path]:
    """Pending documents that no process is pushing right now: what a replay would try."""
    out = []
    for p in pending(path):
        with _claimed(p) as ours:
            if ours:
                out.append(p)
    return out


def job_of(doc_path: Path) -> dict | None:
    """{"job_id", "token"} of the queue job a kept document belongs to (also for one set aside in rejected/)."""
    try:
        return json.loads(_job_path(Path(doc_path)).read_text())
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class Delivered:
    path: Path | None  # None: pushed directly, the outbox could not be written
    run_id: str
    fingerprint: str
    added: bool  # False: the run was already in the store (a replay)
    job_id: int | None
    job_done: bool  # the job was ours to finish and is now done


def deliver(engine, doc_path: Path) -> Delivered:
    """Push one outbox document (the caller holds it: `keep` or a replay), mark its job done, remove both files.
    A StoreError leaves them in place."""
    from db import queue, store

    doc = rundoc.read(doc_path)
    job_file = _job_path(doc_path)
    job = json.loads(job_file.read_text()) if job_file.exists() else None
    done = False
    if job is not None:
        # the run id goes on the job before the push: an agent that dies right after the push leaves a job that
        # the stale check finds done instead of running it again
        queue.attach_run(engine, job["job_id"], job["token"], doc["run_id"])
    added = store.push(engine, doc)
    if job is not None:
        done = queue.complete(engine, job["job_id"], job["token"], doc["run_id"])
    job_file.unlink(missing_ok=True)
    doc_path.unlink(missing_ok=True)
    return Delivered(doc_path, doc["run_id"], doc["job"]["fingerprint"], added, job and job["job_id"], done)


def deliver_kept(engine, doc: dict, job: tuple[int, str] | None = None, path: str | Path | None = None,
                 warn=None) -> Delivered:
    """Keep a finished run in the outbox, then deliver it: how `runner submit` and agents push. A StoreError leaves
    the run in the outbox for a replay. An outbox that cannot be written (disk full, read-only) must not cost the run
    while the store is up: it is then pushed directly (`warn` hears why); a UserError says so if that fails too."""
    with contextlib.ExitStack() as stack:
        try:
            kept = stack.enter_context(keep(doc, job, path))
        except OSError as e:
            return _push_directly(engine, doc, job, directory(path), e, warn)
        return deliver(engine, kept)


def _push_directly(engine, doc: dict, job, where: Path, error: OSError, warn) -> Delivered:
    from db import queue, store
    from core.errors import UserError

    reason = error.strerror or str(error)
    if warn is not None:
        warn(f"the outbox {where} cannot be written ({reason}): pushing run {doc['run_id']} directly")
    try:
        if job is not None:
            queue.attach_run(engine, job[0], job[1], doc["run_id"])
        added = store.push(engine, doc)
        done = queue.complete(engine, job[0], job[1], doc["run_id"]) if job is not None else False
    except StoreError as e:
        raise UserError(f"{e}; the outbox {where} cannot be written either ({reason}): run {doc['run_id']} "
                        "was not kept") from None
    return Delivered(None, doc["run_id"], doc["job"]["fingerprint"], added, job and job[0], done)


def replay(engine, path: str | Path | None = None, on_error=None) -> list[Delivered]:
    """Deliver every pending document that no other process is pushing, oldest first. A StoreError stops the
    replay (what is left stays for the next one); a document that can never be pushed (unreadable, invalid, in
    conflict with the store) is moved to `rejected/`, kept for a person to look at rather than retried forever,
    and reported through `on_error(path, error)`."""
    out = []
    for doc_path in pending(path):
        with _claimed(doc_path) as ours:
            if not ours:
                continue
            try:
                out.append(deliver(engine, doc_path))
            except StoreError as e:
                e.delivered = out  # what reached the store before it went away: the caller still settles those
                raise
            except Exception as e:  # noqa: BLE001 - whatever it is, this document will never be pushed as is
                rejected = doc_path.parent / "rejected"
                rejected.mkdir(exist_ok=True)
                for f in (doc_path, _job_path(doc_path)):
                    if f.exists():
                        os.replace(f, rejected / f.name)
                if on_error is not None:
                    on_error(rejected / doc_path.name, e)
    return out
