"""Nothing lost when the store goes away: runs wait in the local outbox and arrive exactly once.

- the PostgreSQL server stopped during a push: no partial run, `runner push --outbox` delivers it once;
- stopped while an agent runs a job: the agent keeps the run and delivers it when the server is back;
- stopped while `runner submit` runs: exit 3, the run kept for `runner push --outbox`.
Each test stops and starts a PostgreSQL cluster of its own.
"""
from __future__ import annotations

import os
import time

import pytest
from sqlalchemy import event, select
from typer.testing import CliRunner

from db import queue
from db.engine import make_engine, open_store, session_scope
from db.models import AccuracyRecord, PerfRecord, ProblemResult, Run
from db.testing import PgCluster, new_database
from core.errors import StoreError
from runner.cli import app
from runner.fleet import outbox
from tests.fleet_support import LIGHT, REPO, SLOW, count, jobs, spec, start_agent, stop_all, tail, wait_for


@pytest.fixture
def own_postgres():
    """A PostgreSQL cluster of this test's own, so it can be stopped and started."""
    if os.environ.get("DATABASE_URL"):
        pytest.skip("needs a server it can stop: runs only with the cluster the tests start themselves")
    cluster = PgCluster()
    try:
        yield cluster
    finally:
        cluster.remove()


def _no_partial_run(url: str) -> None:
    assert [count(url, m) for m in (Run, PerfRecord, AccuracyRecord, ProblemResult)] == [0, 0, 0, 0]


@pytest.mark.postgres
def test_store_dies_during_a_push_then_the_outbox_delivers_exactly_once(own_postgres, tmp_path, monkeypatch):
    from bench.store_scale import make_doc
    import datetime as dt
    import random

    url = new_database(own_postgres.url)
    engine = open_store(url)
    [job] = queue.enqueue(engine, spec(LIGHT), ["910B3"])
    claim = queue.claim_next(engine, "910B3", "agent")
    doc = make_doc(0, 1, 164, random.Random(1), dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))

    run_sent = []

    @event.listens_for(engine, "before_cursor_execute")
    def crash_the_server(conn, cursor, statement, *args):
        # the first statement after the run row, whatever the push sends next: the server dies inside its transaction
        if run_sent:
            event.remove(engine, "before_cursor_execute", crash_the_server)
            own_postgres.stop("immediate")
        elif statement.startswith("INSERT INTO runs"):
            run_sent.append(statement)

    box = tmp_path / "outbox"
    with pytest.raises(StoreError):
        with outbox.keep(doc, (claim.job_id, claim.token), box) as path:  # as the agent does: keep, then push
            assert outbox.waiting(box) == []  # locked while it is pushed: no replay takes it
            outbox.deliver(engine, path)
    assert outbox.waiting(box) == [path]
    own_postgres.start()
    _no_partial_run(url)  # the transaction died with the server
    monkeypatch.setenv("DEVCOMPARE_OUTBOX", str(box))
    cli = CliRunner()
    r = cli.invoke(app, ["push", "--outbox", "--db", url])
    assert r.exit_code == 0, r.output
    assert f"pushed: {path}" in r.output and f"job {job} done" in r.output and "0 run(s) left" in r.output
    r = cli.invoke(app, ["push", "--outbox", "--db", url])  # a second replay finds nothing to do
    assert r.exit_code == 0 and "pushed" not in r.output
    assert [count(url, m) for m in (Run, ProblemResult)] == [1, 164]
    [row] = jobs(url)
    assert (row.state, row.run_id) == ("done", doc["run_id"])


@pytest.mark.postgres
def test_store_down_during_a_run_then_the_agent_delivers_from_its_outbox(own_postgres, tmp_path):
    url = new_database(own_postgres.url)
    [job] = queue.enqueue(open_store(url), spec(SLOW), ["cpu"])
    box, log = tmp_path / "outbox", tmp_path / "agent.log"
    proc = start_agent(url, box, log, "--once", "--heartbeat", "0.5", "--stale-after", "60", "--poll-interval", "0.5")
    try:
        wait_for(lambda: jobs(url)[0].state == "running", 60, "the job to be claimed", proc, log)
        own_postgres.stop("immediate")  # the store dies while the model runs
        wait_for(lambda: outbox.pending(box), 120, "the finished run to land in the outbox", proc, log)
        time.sleep(1.0)  # the agent keeps polling a dead store, it does not exit
        assert proc.poll() is None, tail(log)
        own_postgres.start()
        assert proc.wait(timeout=60) == 0, tail(log)
    finally:
        stop_all([proc])
    [row] = jobs(url)
    assert (row.id, row.state, row.attempts) == (job, "done", 1)
    with session_scope(make_engine(url)) as s:
        assert list(s.scalars(select(Run.id))) == [row.run_id]
    assert outbox.pending(box) == []
    text = log.read_text()
    assert "kept in the outbox" in text and "replayed run" in text


@pytest.mark.postgres
def test_submit_keeps_its_run_in_the_outbox_when_the_store_dies_during_the_run(own_postgres, tmp_path, monkeypatch):
    import runner.submit

    url = new_database(own_postgres.url)
    box = tmp_path / "outbox"
    monkeypatch.setenv("DEVCOMPARE_OUTBOX", str(box))
    real_submit_job = runner.submit.submit_job

    def run_then_lose_the_store(*args, **kwargs):
        doc = real_submit_job(*args, **kwargs)  # the real job, on this CPU
        own_postgres.stop("immediate")  # the store goes away before the push
        return doc

    monkeypatch.setattr(runner.submit, "submit_job", run_then_lose_the_store)
    cli = CliRunner()
    r = cli.invoke(app, ["submit", "--device", "cpu", "--job", str(REPO / "jobs" / "smoke.toml"), "--db", url])
    assert r.exit_code == 3, r.output
    [kept] = outbox.pending(box)
    assert "is kept in the outbox" in r.output and "runner push --outbox" in r.output and "Traceback" not in r.output
    own_postgres.start()
    _no_partial_run(url)
    r = cli.invoke(app, ["push", "--outbox", "--db", url])
    assert r.exit_code == 0, r.output
    assert outbox.pending(box) == [] and count(url, Run) == 1


def test_push_outbox_exits_non_zero_when_it_sets_a_corrupt_document_aside(store_url, tmp_path, reference_docs):
    """The rest is pushed; the corrupt document is moved to rejected/, and the exit code and message say so."""
    box = tmp_path / "outbox"  # DEVCOMPARE_OUTBOX (conftest)
    with outbox.keep(reference_docs[0]):
        pass
    (box / "0000-torn.json").write_text('{"format": "devcompare.run/1", "run_id": ')  # a write cut short
    r = CliRunner().invoke(app, ["push", "--outbox", "--db", store_url])
    assert r.exit_code == 2, r.output
    assert f"set aside {box / 'rejected' / '0000-torn.json'}" in r.output
    assert f"moved to {box / 'rejected'}" in r.output and "Traceback" not in r.output
    assert (box / "rejected" / "0000-torn.json").exists() and outbox.pending(box) == []
    assert count(store_url, Run) == 1  # the good document was pushed all the same
    r = CliRunner().invoke(app, ["push", "--outbox", "--db", store_url])  # nothing left to set aside
    assert r.exit_code == 0, r.output
