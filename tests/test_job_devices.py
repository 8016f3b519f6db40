"""The per-job summary (db.models.JobDevice) that pushes keep current, on SQLite and a real PostgreSQL: it follows
pushes in any arrival order and concurrent ones, the rebuild and the migration compute the same rows, and a run
pushed twice at once is stored once."""
from __future__ import annotations

import copy
import datetime as dt
import threading
import uuid

import pytest
from alembic import command
from sqlalchemy import delete, func, insert, select
from typer.testing import CliRunner

from db import pairing, store
from db.engine import _alembic_config, make_engine, open_store, session_scope, upgrade
from db.models import RECENT, JobDevice, ProblemResult, Run, utc
from tests.test_store import measured_doc

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def _doc(reference_docs, device: str, minute: int, fingerprint: str = "a" * 16, name: str = "job") -> dict:
    doc = measured_doc(reference_docs)
    at = (T0 + dt.timedelta(minutes=minute)).isoformat()
    doc.update(run_id=str(uuid.uuid4()), started_at=at, finished_at=at)
    doc["device"]["class"] = device
    doc["job"].update(fingerprint=fingerprint, name=name)
    return doc


def _summary(engine) -> dict:
    with session_scope(engine) as s:
        return {(r.fingerprint, r.device_class): (r.runs, r.latest_run, utc(r.latest_finished_at), r.job_name,
                                                  utc(r.recent_since))
                for r in s.scalars(select(JobDevice))}


def _expected(engine) -> dict:
    """The summary computed the slow way: every run, ordered by the pairing rule."""
    with session_scope(engine) as s:
        runs = sorted(s.scalars(select(Run)), key=pairing.order_key)
    out = {}
    for key in {(r.fingerprint, r.device_class) for r in runs}:
        mine = [r for r in runs if (r.fingerprint, r.device_class) == key]
        latest = mine[-1]
        out[key] = (len(mine), latest.id, utc(latest.finished_at), latest.job_name,
                    min(utc(r.finished_at) for r in mine[-RECENT:]))
    return out


def test_summary_follows_pushes_in_any_order_and_rebuilds_the_same(store_url, reference_docs):
    engine = open_store(store_url)
    minutes = [5, 1, 30, 2, 29, 3] + list(range(40, 40 + RECENT + 3))  # late arrivals, then more than RECENT
    docs = [_doc(reference_docs, "910B3", m, name=f"job-{m}") for m in minutes]
    docs += [_doc(reference_docs, "A100", 7), _doc(reference_docs, "A100", 6, fingerprint="b" * 16)]
    tie = _doc(reference_docs, "A100", 7)  # ties the other A100 run's finish: pushed later, so it is the latest
    for doc in docs + [tie]:
        assert store.push(engine, doc) is True
    got = _summary(engine)
    assert got == _expected(engine)
    assert got[("a" * 16, "A100")][:2] == (2, tie["run_id"])
    assert got[("a" * 16, "910B3")][0] == len(minutes)
    assert got[("a" * 16, "910B3")][4] == T0 + dt.timedelta(minutes=63 - (RECENT - 1))  # the RECENT-th newest
    with session_scope(engine) as s:
        s.execute(delete(JobDevice))
        s.add(JobDevice(fingerprint="gone", device_class="x", runs=1, latest_run="x", latest_finished_at=T0,
                        latest_pushed_at=T0, job_name="x", model_name="x", recent_since=T0))
    assert store.rebuild_summary(engine) == 3
    assert _summary(engine) == got


def test_a_replay_changes_nothing(store_url, reference_docs):
    engine = open_store(store_url)
    doc = _doc(reference_docs, "910B3", 1)
    assert store.push(engine, doc) is True
    before = _summary(engine)
    assert store.push_many(engine, [doc, _doc(reference_docs, "910B3", 2)]) == [False, True]
    assert _summary(engine)[("a" * 16, "910B3")][0] == before[("a" * 16, "910B3")][0] + 1


def _at_once(store_url: str, docs: list[dict]) -> list[bool]:
    """Push each document from its own thread and engine, released together."""
    engines = [make_engine(store_url) for _ in docs]
    barrier, results = threading.Barrier(len(docs)), [None] * len(docs)

    def push(i: int) -> None:
        barrier.wait()
        results[i] = store.push(engines[i], docs[i])

    threads = [threading.Thread(target=push, args=(i,)) for i in range(len(docs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for e in engines:
        e.dispose()
    return results


def test_one_run_pushed_twice_at_once_is_stored_once(store_url, reference_docs):
    engine = open_store(store_url)
    doc = _doc(reference_docs, "910B3", 1)
    assert sorted(_at_once(store_url, [doc, copy.deepcopy(doc)])) == [False, True]
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(Run)) == 1
        assert s.scalar(select(func.count()).select_from(ProblemResult)) == 2
    assert _summary(engine)[("a" * 16, "910B3")][0] == 1


def test_concurrent_pushes_of_one_job_and_device_keep_the_summary_right(store_url, reference_docs):
    engine = open_store(store_url)
    store.push(engine, _doc(reference_docs, "910B3", 0))
    # the newest run arrives among others: whichever commits last must not undo it
    docs = [_doc(reference_docs, "910B3", m) for m in (50, 10, 20, 30)]
    assert _at_once(store_url, docs) == [True] * 4
    got = _summary(engine)
    assert got == _expected(engine) and got[("a" * 16, "910B3")][:2] == (5, docs[0]["run_id"])


def test_the_migration_summarises_existing_runs(store_url, reference_docs):
    engine = make_engine(store_url)
    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), "0003")
    docs = [_doc(reference_docs, d, m, fingerprint=fp) for d, m, fp in
            [("910B3", 3, "a" * 16), ("910B3", 1, "a" * 16), ("A100", 2, "a" * 16), ("A100", 5, "b" * 16)]]
    with engine.begin() as conn:  # runs as an older version stored them: no summary rows
        conn.execute(insert(Run.__table__), [store.rows_from_document(d)[0] for d in docs])
    upgrade(engine)
    assert _summary(engine) == _expected(engine) and len(_summary(engine)) == 3


def test_rebuild_summary_command(store_url, reference_docs):
    from runner.cli import app

    engine = open_store(store_url)
    store.push(engine, _doc(reference_docs, "A100", 1))
    with session_scope(engine) as s:
        s.execute(delete(JobDevice))
    result = CliRunner().invoke(app, ["db", "rebuild-summary", "--db", store_url])
    assert result.exit_code == 0 and "1 job/device row(s)" in result.output
    assert _summary(engine) == _expected(engine)


def test_a_failed_push_is_the_stores_error_and_leaves_the_summary(store_url, reference_docs):
    from sqlalchemy.exc import IntegrityError

    engine = open_store(store_url)
    store.push(engine, _doc(reference_docs, "910B3", 1))
    before = _summary(engine)
    doc = _doc(reference_docs, "910B3", 2)
    doc["humaneval"]["results"].append(dict(doc["humaneval"]["results"][0]))  # the same problem and sample twice
    with pytest.raises(IntegrityError):  # SQLAlchemy's, as for any statement: the CLI and agent know it
        store.push(engine, doc)
    assert _summary(engine) == before
    with session_scope(engine) as s:
        assert s.get(Run, doc["run_id"]) is None
