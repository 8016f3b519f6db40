"""The store on SQLite and on a real PostgreSQL: schema, round trip, idempotent push, a schema behind or ahead of
the code (messages whose fix command can be pasted), a host that never answers, and trends of a device pair over
stored runs."""
from __future__ import annotations

import copy
import shlex
import socket
import time
import uuid

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, select, text
from typer.testing import CliRunner

from db import store
from db.engine import (CONNECT_TIMEOUT_S, PING_AFTER_IDLE_S, _alembic_config, current_revision, head_revision,
                       make_engine, open_store, session_scope, upgrade)
from db.models import Base, PerfRecord, ProblemResult, Run
from db.testing import new_database
from core.errors import StoreError
from runner.cli import app
from tests.test_outbox import own_postgres  # noqa: F401 (a fixture: a cluster of the test's own, to restart)


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


def test_problem_numbers_are_stored_whatever_their_json_spelling(store_url, reference_docs):
    """2 and 2.0 in one column, a column with no values at all: stored as the column's type (the rows of a run go
    to PostgreSQL as one array per column, and an array holds one type)."""
    engine = open_store(store_url)
    doc = measured_doc(reference_docs)
    first, second = doc["humaneval"]["results"]
    first.update(sample=0, generation_s=2, generated_tokens=5.0)
    second.update(sample=1.0, generation_s=2.5, generated_tokens=None)  # and neither has exec_s
    assert store.push(engine, doc) is True
    with session_scope(engine) as s:
        rows = s.execute(select(ProblemResult.sample, ProblemResult.generation_s, ProblemResult.generated_tokens,
                                ProblemResult.exec_s).order_by(ProblemResult.task_id)).all()
    assert [tuple(r) for r in rows] == [(0, 2.0, 5, None), (1, 2.5, None, None)]
    assert [type(v) for v in rows[0][:3]] == [int, float, int]


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


def _set_revision(url: str, revision: str) -> None:
    engine = make_engine(url)
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})
    engine.dispose()


def _upgrade_to(url: str, revision: str) -> None:
    """A store as an older release of the code left it: migrated up to `revision` only."""
    from alembic import command

    engine = make_engine(url)
    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), revision)
    engine.dispose()


def _with_password(url: str) -> str:
    """The URL with a password in it (the test cluster trusts local connections, so any password connects)."""
    return url.replace("postgresql://postgres@", "postgresql://postgres:s3cret@") if "postgresql" in url else url


def test_store_behind_code_prints_a_command_that_can_be_pasted(store_url, monkeypatch):
    url = _with_password(store_url)
    monkeypatch.delenv("DEVCOMPARE_DB_URL")  # the URL is given: the command must carry it
    _upgrade_to(url, "0001")
    with pytest.raises(StoreError) as e:
        open_store(url)
    msg = str(e.value)
    assert "schema revision 0001, this code expects" in msg
    command = msg.split("run `", 1)[1].split("`", 1)[0]
    assert command.startswith("runner db upgrade --db ") and "***" not in command
    # the command does what it says: pasted, it brings the store to the code's revision
    result = CliRunner().invoke(app, shlex.split(command)[1:])
    assert result.exit_code == 0, result.output
    assert current_revision(make_engine(url)) == head_revision()
    # the URL came from the environment: the command relies on it too
    with make_engine(url).begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0003'"))
    monkeypatch.setenv("DEVCOMPARE_DB_URL", url)
    with pytest.raises(StoreError) as e:
        open_store()
    assert "run `runner db upgrade` (back up the database first)" in str(e.value)


def test_store_newer_than_code_says_to_update_this_host(store_url):
    _set_revision(store_url, "9999_from_the_future")
    with pytest.raises(StoreError) as e:
        open_store(store_url)
    msg = str(e.value)
    assert "9999_from_the_future" in msg and "this host's code is older than the store" in msg
    assert "runner db upgrade" not in msg  # it cannot help: this code does not know the store's schema
    result = CliRunner().invoke(app, ["db", "upgrade", "--db", store_url])
    assert result.exit_code == 3
    assert "this host's code is older than the store" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_host_that_accepts_but_never_answers_fails_fast_naming_what_was_tried():
    """A proxy with nothing behind it, a hung server: the TCP connection is accepted, no PostgreSQL reply comes."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(StoreError) as e:
            open_store(f"postgresql://runner@127.0.0.1:{port}/devcompare")
        took = time.monotonic() - started
    assert took < CONNECT_TIMEOUT_S + 3
    assert f"no answer from 127.0.0.1:{port} within {CONNECT_TIMEOUT_S} s" in str(e.value)
    assert "connect_timeout" in str(e.value)


def test_newest_runs_list_newest_first_in_utc(store_url, reference_docs):
    import datetime as dt
    import time

    from db import runs

    engine = open_store(store_url)
    docs = [measured_doc(reference_docs) for _ in range(3)]
    docs[0].update(finished_at="2026-01-01T00:00:00+02:00")
    for doc in docs[1:]:  # the same finish time: the one pushed later is newer, as the comparison reads them
        doc.update(finished_at="2026-01-02T00:00:00+00:00")
    for doc in docs:
        store.push(engine, doc)
        time.sleep(0.01)
    with session_scope(engine) as s:
        listed = runs.newest(s, 10)
        assert [r["id"] for r in listed] == [docs[2]["run_id"], docs[1]["run_id"], docs[0]["run_id"]]
        assert listed[2]["finished_at"] == dt.datetime(2025, 12, 31, 22, tzinfo=dt.timezone.utc)
        assert {k: listed[0][k] for k in ("device_class", "source")} == {"device_class": "A100", "source": "measured"}
        assert [r["id"] for r in runs.newest(s, 1)] == [docs[2]["run_id"]]


@pytest.mark.postgres
def test_a_store_restarted_while_the_pool_is_idle_costs_a_reconnect_not_an_error(own_postgres, reference_docs):
    """Pooled connections idle PING_AFTER_IDLE_S or longer are pinged before use: the restarted server's dead
    connections are replaced, and the next push goes through."""
    engine = open_store(new_database(own_postgres.url))
    assert store.push(engine, measured_doc(reference_docs)) is True
    own_postgres.stop("immediate")
    own_postgres.start()
    time.sleep(PING_AFTER_IDLE_S)
    assert store.push(engine, measured_doc(reference_docs)) is True
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(Run)) == 2


def test_unreachable_store_is_a_store_error():
    with pytest.raises(StoreError) as e:
        open_store("postgresql://nobody@127.0.0.1:1/none")
    assert "127.0.0.1" in str(e.value)


# -- trends for a device pair (db/trends.py) ---------------------------------------------------------------------------

def _run(reference_docs, device: str, at: str, decode: dict[int, float], pass_at_1: float | None,
         fingerprint: str = "f" * 16) -> dict:
    doc = copy.deepcopy(reference_docs[1])
    doc.update(run_id=str(uuid.uuid4()), started_at=at, finished_at=at)
    doc["device"]["class"] = device
    doc["job"]["fingerprint"] = fingerprint
    doc["perf"] = [{"batch_size": bs, "first_token_tokens_per_s": {"median": 1.0},
                    "decode_tokens_per_s": {"median": v}} for bs, v in decode.items()]
    doc["humaneval"] = None if pass_at_1 is None else {"problems": 10, "passed": round(10 * pass_at_1),
                                                         "pass_at_k": {"1": pass_at_1}}
    return doc


def test_pair_trends_follow_the_table_as_it_stood(store_url, reference_docs):
    from db import queries, trends

    engine = open_store(store_url)
    runs = [_run(reference_docs, "A100", "2026-01-01T00:00:00+00:00", {1: 10.0, 2: 20.0}, 0.5),
            _run(reference_docs, "910B3", "2026-01-02T00:00:00+00:00", {1: 5.0, 2: 10.0}, 0.25),
            _run(reference_docs, "cpu", "2026-01-02T12:00:00+00:00", {1: 1.0}, 0.0),  # not in the pair
            _run(reference_docs, "A100", "2026-01-03T00:00:00+00:00", {1: 20.0}, None),  # baseline moved; no bs 2
            _run(reference_docs, "910B3", "2026-01-04T00:00:00+00:00", {1: 10.0, 2: 10.0}, 0.5),
            _run(reference_docs, "910B3", "2026-01-05T00:00:00+00:00", {1: 0.0}, 0.5, fingerprint="e" * 16)]
    for doc in runs:
        store.push(engine, doc)
    with session_scope(engine) as s:
        series = trends.pair_trends(s, "910B3", "A100")
        assert list(series) == [trends.TrendKey("f" * 16, "decode_tokens_per_s", 1),
                                trends.TrendKey("f" * 16, "decode_tokens_per_s", 2),
                                trends.TrendKey("f" * 16, "first_token_tokens_per_s", 1),
                                trends.TrendKey("f" * 16, "first_token_tokens_per_s", 2),
                                trends.TrendKey("f" * 16, "pass_at_1", None)]  # "e...": no A100 run, no point
        bs1 = series[trends.TrendKey("f" * 16, "decode_tokens_per_s", 1)]
        # one point per run once both sides exist: the 910B3 run, the A100 run that moved the baseline, the 910B3 run
        assert bs1.ratio == [0.5, 0.25, 0.5]
        assert [p.at.day for p in bs1.points()] == [2, 3, 4]
        assert bs1.candidate_run == [runs[1]["run_id"], runs[1]["run_id"], runs[4]["run_id"]]
        assert bs1.baseline_run == [runs[0]["run_id"], runs[3]["run_id"], runs[3]["run_id"]]
        # the latest A100 run has no batch size 2 (and no accuracy): the table says "missing", the series no point
        assert series[trends.TrendKey("f" * 16, "decode_tokens_per_s", 2)].ratio == [0.5]
        assert series[trends.TrendKey("f" * 16, "pass_at_1", None)].ratio == [0.5]
        # the dashboard's per-job trend pairs runs by the same rule
        dash = queries.trend(s, "f" * 16, "910B3", "A100", "decode_tokens_per_s", 1)["ratios"]
        assert [r["ratio"] for r in dash] == bs1.ratio
        # and charts each device's runs in that order: the cpu run is not in the pair, the last A100 run lacks bs 2
        values = queries.trend(s, "f" * 16, "910B3", "A100", "decode_tokens_per_s", 2)["values"]
        assert [(v["run_id"], v["device"], v["value"]) for v in values] == [
            (runs[0]["run_id"], "A100", 20.0), (runs[1]["run_id"], "910B3", 10.0), (runs[4]["run_id"], "910B3", 10.0)]
        assert trends.pair_trends(s, "910B3", "A100", fingerprint="e" * 16) == {}
        with pytest.raises(Exception, match="both A100"):
            trends.pair_trends(s, "A100", "A100")


def test_rebuild_summary_refuses_a_sqlite_store_that_does_not_exist(tmp_path):
    missing = tmp_path / "typo" / "dir" / "x.db"
    result = CliRunner().invoke(app, ["db", "rebuild-summary", "--db", f"sqlite:///{missing}"])
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert f"no store at {missing}" in result.output
    assert not (tmp_path / "typo").exists()  # nothing created on the way
    open_store(f"sqlite:///{tmp_path / 'x.db'}")  # an existing (empty) store is rebuilt as before
    result = CliRunner().invoke(app, ["db", "rebuild-summary", "--db", f"sqlite:///{tmp_path / 'x.db'}"])
    assert result.exit_code == 0 and "0 job/device row(s)" in result.output
