"""The store on SQLite and on a real PostgreSQL: schema, round trip, idempotent push, schema-behind errors."""
from __future__ import annotations

import copy
import uuid

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, select, text

from db import store
from db.engine import current_revision, head_revision, make_engine, open_store, session_scope, upgrade
from db.models import Base, PerfRecord, ProblemResult, Run
from core.errors import StoreError


def measured_doc(reference_docs) -> dict:
    """A measured-looking document with raw repeats and per-problem results (built from a reference one)."""
    doc = copy.deepcopy(reference_docs[1])
    doc.update(run_id=str(uuid.uuid4()), source="measured", imported_from=None, missing=[])
    doc["perf"] = [{"batch_size": 1, "prompt_tokens": 8, "new_tokens": 4, "warmup": 1, "repeats": 3,
                    "ttft_ms": {"median": 50.0, "p10": 40.0, "p90": 60.0, "raw": [40.0, 50.0, 60.0]},
                    "first_token_tokens_per_s": {"median": 20.0, "p10": 16.7, "p90": 25.0, "raw": [25.0, 20.0, 16.7]},
                    "decode_tokens_per_s": {"median": 30.0, "p10": 29.0, "p90": 31.0, "raw": [29.0, 30.0, 31.0]},
                    "peak_memory_bytes": 2**40, "cpu_contention": False}]
    doc["humaneval"] = {"problems": 2, "samples_per_problem": 1, "passed": 1, "pass_at_k": {"1": 0.5},
                        "results": [{"task_id": "HumanEval/0", "sample": 0, "completion": "    return 1\n",
                                     "passed": True, "verdict": "passed", "generated_tokens": 5},
                                    {"task_id": "HumanEval/1", "sample": 0, "completion": "    pass\n",
                                     "passed": False, "verdict": "failed: ", "generated_tokens": 3}]}
    return doc


def test_schema_matches_models(store_url):
    """The migrations produce exactly the models' schema (what `alembic check` verifies)."""
    engine = make_engine(store_url)
    upgrade(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == [], f"models and migrations differ; write a migration for: {diff}"


def test_push_round_trip_and_idempotence(store_url, reference_docs):
    engine = open_store(store_url)  # an empty store is created on first use
    assert current_revision(engine) == head_revision()
    doc = measured_doc(reference_docs)
    assert store.push(engine, doc) is True
    assert store.push(engine, doc) is False  # a replay is a no-op
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(Run)) == 1
        run = s.get(Run, doc["run_id"])
        assert (run.device_class, run.fingerprint, run.source) == ("A100", doc["job"]["fingerprint"], "measured")
        perf = run.perf[0]
        assert (perf.ttft_ms, perf.ttft_ms_p10, perf.ttft_ms_p90) == (50.0, 40.0, 60.0)
        assert perf.raw["ttft_ms"] == [40.0, 50.0, 60.0]
        assert perf.peak_memory_bytes == 2**40  # needs a 64-bit column
        assert perf.e2e_ms is None  # absent in the document: NULL, not 0
        assert run.accuracy.pass_at_1 == 0.5 and run.accuracy.passed == 1
        verdicts = {p.task_id: (p.passed, p.verdict) for p in run.problems}
        assert verdicts == {"HumanEval/0": (True, "passed"), "HumanEval/1": (False, "failed: ")}


def test_times_with_an_offset_are_stored_as_the_same_instant(store_url, reference_docs):
    import datetime as dt

    from db.models import utc

    engine = open_store(store_url)
    doc = measured_doc(reference_docs)
    doc["started_at"], doc["finished_at"] = "2026-03-01T07:00:00+08:00", "2026-03-01T08:00:00+08:00"
    store.push(engine, doc)
    with session_scope(engine) as s:
        run = s.get(Run, doc["run_id"])
        assert utc(run.finished_at) == dt.datetime(2026, 3, 1, 0, 0, tzinfo=dt.timezone.utc)  # SQLite keeps no offset


def test_failed_push_leaves_nothing(store_url, reference_docs):
    """A push that fails half way (here: a duplicate problem row) rolls back the whole run."""
    engine = open_store(store_url)
    doc = measured_doc(reference_docs)
    doc["humaneval"]["results"].append(dict(doc["humaneval"]["results"][0]))
    with pytest.raises(Exception):
        store.push(engine, doc)
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(Run)) == 0
        assert s.scalar(select(func.count()).select_from(PerfRecord)) == 0
        assert s.scalar(select(func.count()).select_from(ProblemResult)) == 0


def test_store_behind_code_names_the_upgrade_command(store_url):
    engine = make_engine(store_url)
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'old0'"))
    with pytest.raises(StoreError) as e:
        open_store(store_url)
    assert "runner db upgrade" in str(e.value) and "old0" in str(e.value)


def test_unreachable_store_is_a_store_error():
    with pytest.raises(StoreError) as e:
        open_store("postgresql://nobody@127.0.0.1:1/none")
    assert "127.0.0.1" in str(e.value)
