"""Fleet mode: the job queue on SQLite and PostgreSQL, and agents as real processes.

- queue semantics (claim, heartbeat, retry, hand back, stale requeue, cancel) and concurrent claims, both backends;
- `runner enqueue` / `runner jobs` / `runner agent` through the CLI; a failing job is retried, then failed;
- an agent measures serving jobs through the endpoint in its settings (the stub server on loopback);
- 6 agent processes drain 60 jobs from one PostgreSQL: every job runs exactly once, none is left claimed;
- an agent killed with SIGKILL mid-job: the job is requeued and completed by another agent;
- a dead agent's job is requeued by an agent busy with a job of its own (from its heartbeat thread);
- SIGTERM mid-job hands the job back;
- two processes upgrading one fresh PostgreSQL database at once.
Store outages (nothing lost through the outbox) are in test_outbox.py.

Agents run the tiny random Llama on one HumanEval problem with one timed repeat (about a second a job on 2 cores);
OMP_NUM_THREADS=1 keeps six of them from fighting over the cores.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from db import queue
from db.engine import current_revision, head_revision, make_engine, open_store, session_scope
from db.models import Run
from db.testing import new_database
from runner.cli import app
from runner.fleet import outbox
from tests.fleet_support import BUSY, LIGHT, REPO, SLOW, count, jobs, spec, start_agent, stop_all, tail, wait_for


# -- the queue itself, on both backends ----------------------------------------------------------------------------

def test_queue_lifecycle(store_url):
    engine = open_store(store_url)
    light = spec(LIGHT)
    cpu, a100 = queue.enqueue(engine, light, ["cpu", "A100", "cpu"], max_attempts=2)  # duplicates dropped
    assert queue.claim_next(engine, "910B3", "a") is None  # nothing for that class
    c = queue.claim_next(engine, "cpu", "agent-1")
    assert (c.job_id, c.attempt, c.max_attempts, c.fingerprint) == (cpu, 1, 2, light.fingerprint)
    assert spec(c.spec).fingerprint == light.fingerprint  # the stored spec is the job
    assert queue.claim_next(engine, "cpu", "agent-2") is None  # claimed once
    assert queue.heartbeat(engine, [c]) == []
    assert queue.fail(engine, c, "RunError: rank 1 crashed") == "queued"  # attempts left: retried
    c2 = queue.claim_next(engine, "cpu", "agent-2")
    assert c2.attempt == 2 and c2.token != c.token
    assert queue.heartbeat(engine, [c]) == [c]  # the old claim is fenced off
    assert not queue.complete(engine, c.job_id, c.token, "x")
    assert queue.release(engine, c2)  # handed back: the attempt does not count
    c3 = queue.claim_next(engine, "cpu", "agent-3")
    assert c3.attempt == 2
    assert queue.fail(engine, c3, "RunError: again") == "failed"
    with session_scope(engine) as s:
        [failed] = queue.list_jobs(s, state="failed")
        assert (failed["id"], failed["attempts"], failed["error"], failed["claimed_by"]) == \
            (cpu, 2, "RunError: again", "agent-3")
        assert queue.counts(s) == {"queued": 1, "running": 0, "done": 0, "failed": 1, "cancelled": 0}

    # stale heartbeat: requeued; but a job whose run is already stored is done instead of run again
    d = queue.claim_next(engine, "A100", "dead-agent")
    time.sleep(1.1)
    assert queue.requeue_stale(engine, 60) == {"done": [], "failed": [], "queued": []}
    assert queue.requeue_stale(engine, 1, keep_tokens=[d.token]) == {"done": [], "failed": [], "queued": []}
    assert queue.requeue_stale(engine, 1) == {"done": [], "failed": [], "queued": [a100]}
    d2 = queue.claim_next(engine, "A100", "agent-4")
    assert d2.attempt == 2
    from tests.test_store import measured_doc
    from core import rundoc

    doc = measured_doc([rundoc.read(REPO / "examples" / f"reference-{x}.json") for x in ("910B3", "A100")])
    assert queue.attach_run(engine, d2.job_id, d2.token, doc["run_id"])
    from db import store

    store.push(engine, doc)
    time.sleep(1.1)  # the agent died between push and complete
    assert queue.requeue_stale(engine, 1)["done"] == [a100]
    [row] = [j for j in jobs(store_url) if j.id == a100]
    assert (row.state, row.run_id) == ("done", doc["run_id"])

    [new] = queue.enqueue(engine, light, ["cpu"])
    assert queue.cancel(engine, new) == "queued"
    with pytest.raises(Exception, match="already cancelled"):
        queue.cancel(engine, new)
    with pytest.raises(Exception, match="no job 9999"):
        queue.cancel(engine, 9999)


def test_concurrent_claims_take_each_job_once(store_url):
    engine = open_store(store_url)
    ids = [i for _ in range(40) for i in queue.enqueue(engine, spec(LIGHT), ["cpu"])]
    claimed: list[int] = []
    lock = threading.Lock()

    def worker(n):
        while (c := queue.claim_next(engine, "cpu", f"w{n}")) is not None:
            with lock:
                claimed.append(c.job_id)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(ids)


# -- the CLI, in process ---------------------------------------------------------------------------------------------

def test_enqueue_jobs_cancel_cli(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    cli = CliRunner()
    r = cli.invoke(app, ["enqueue", "--job", "jobs/smoke.toml", "--device", "910B3", "--device", "A100"])
    assert r.exit_code == 0, r.output
    assert "job 1: smoke on 910B3" in r.output and "job 2: smoke on A100" in r.output
    r = cli.invoke(app, ["jobs", "--format", "json"])
    assert r.exit_code == 0, r.output
    import json

    listed = json.loads(r.stdout)
    assert [(j["id"], j["device_class"], j["state"], j["attempts"], j["run_id"]) for j in listed] == \
        [(2, "A100", "queued", 0, None), (1, "910B3", "queued", 0, None)]
    assert cli.invoke(app, ["jobs", "cancel", "2"]).exit_code == 0
    r = cli.invoke(app, ["jobs"])
    assert r.exit_code == 0 and "cancelled" in r.output
    for args, fragment in ((["jobs", "cancel", "2"], "already cancelled"), (["jobs", "cancel", "7"], "no job 7"),
                           (["enqueue", "--job", "jobs/smoke.toml", "--device", "TPUv9"], "unknown device 'TPUv9'"),
                           (["jobs", "--format", "xml"], "table or json"), (["push"], "--outbox")):
        r = cli.invoke(app, args)
        assert r.exit_code == 2 and fragment in r.output, (args, r.output)


def test_agent_runs_jobs_like_submit_and_retries_failures(tmp_path, monkeypatch):
    monkeypatch.setenv("DEVCOMPARE_OUTBOX", str(tmp_path / "outbox"))
    url = os.environ["DEVCOMPARE_DB_URL"]  # the test's own SQLite store
    engine = open_store(url)
    [good] = queue.enqueue(engine, spec(LIGHT), ["cpu"])
    bad_spec = spec({**LIGHT, "name": "no-weights", "model": {"name": "some/model", "path": str(tmp_path / "none")}})
    [bad] = queue.enqueue(engine, bad_spec, ["cpu"], max_attempts=2)
    [other] = queue.enqueue(engine, spec(LIGHT), ["A100"])
    r = CliRunner().invoke(app, ["agent", "--device", "cpu", "--once", "--poll-interval", "0.1"])
    assert r.exit_code == 0, r.output
    rows = {j.id: j for j in jobs(url)}
    assert (rows[good].state, rows[good].attempts) == ("done", 1)
    assert (rows[bad].state, rows[bad].attempts) == ("failed", 2)
    assert "neither an HF model directory" in rows[bad].error
    assert rows[bad].claimed_by and rows[bad].run_id is None
    assert (rows[other].state, rows[other].attempts) == ("queued", 0)  # another device class's job
    with session_scope(engine) as s:
        run = s.get(Run, rows[good].run_id)
        # what `runner submit` stores: perf records, accuracy, per-problem results, the job's fingerprint
        assert (run.fingerprint, run.device_class, run.source) == (spec(LIGHT).fingerprint, "cpu", "measured")
        assert len(run.perf) == 1 and run.accuracy.problems == 1 and len(run.problems) == 1
    assert outbox.pending() == []


SERVING = {"name": "fleet-serving", "seed": 1234, "humaneval": None, "model": {"name": "tiny-random-llama"},
           "serving": {"requests": 3, "input_tokens": 16, "output_tokens": 5, "concurrency": [1, 2], "warmup": 1,
                       "time_limit_s": 30.0, "request_timeout_s": 5.0}}


def test_agent_measures_serving_jobs_through_its_endpoint(tmp_path, monkeypatch):
    from runner.serving.stub import Stub, serve_in_thread

    monkeypatch.setenv("DEVCOMPARE_OUTBOX", str(tmp_path / "outbox"))
    url = os.environ["DEVCOMPARE_DB_URL"]  # the test's own SQLite store
    engine = open_store(url)
    [unserved] = queue.enqueue(engine, spec({**SERVING, "name": "no-endpoint"}), ["cpu"], max_attempts=1)
    served_spec = spec(SERVING)
    [served] = queue.enqueue(engine, served_spec, ["cpu"])
    endpoint, stop = serve_in_thread(Stub())  # a real HTTP server on 127.0.0.1
    try:
        r = CliRunner().invoke(app, ["agent", "--device", "cpu", "--once", "--poll-interval", "0.1",
                                     "--endpoint", f"fleet-serving={endpoint}"])
    finally:
        stop()
    assert r.exit_code == 0, r.output
    rows = {j.id: j for j in jobs(url)}
    assert (rows[unserved].state, rows[unserved].attempts) == ("failed", 1)  # and the agent went on to the next
    assert rows[unserved].error == ("UserError: serving job 'no-endpoint' needs an endpoint: start the agent with "
                                    "--endpoint URL (or --endpoint no-endpoint=URL)")
    assert rows[served].state == "done"
    from db.models import ServingRecord

    with session_scope(engine) as s:
        run = s.get(Run, rows[served].run_id)
        assert (run.fingerprint, run.device_class, run.source) == (served_spec.fingerprint, "cpu", "measured")
        levels = s.scalars(select(ServingRecord).where(ServingRecord.run_id == run.id)
                           .order_by(ServingRecord.level)).all()
        assert [(lv.mode, lv.level, lv.completed) for lv in levels] == [("concurrency", 1, 3), ("concurrency", 2, 3)]
        assert all(lv.serving_ttft_ms is not None and lv.token_source == "usage" for lv in levels)
        assert run.environment["server"]["models"] == ["stub-model"]
    for bad, fragment in ((["--endpoint", "=http://x"], "job name before '=' is empty"),
                          (["--endpoint", "ftp://x"], "http:// or https://"),
                          (["--endpoint", "http://a", "--endpoint", "http://b"], "given twice"),
                          (["--endpoint", "http://[::1"], "is not a valid URL (Invalid IPv6 URL)"),
                          (["--endpoint", "fleet-serving=http://127.0.0.1:99999"], "Port out of range 0-65535"),
                          (["--endpoint", "http://127.0.0.1:abc"], "Port could not be cast to integer")):
        r = CliRunner().invoke(app, ["agent", "--device", "cpu", "--once", *bad])
        assert r.exit_code == 2 and fragment in r.output, (bad, r.output)
        assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output, r.output


# -- real agent processes --------------------------------------------------------------------------------------------

def test_sigterm_hands_the_current_job_back(tmp_path):
    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    [job] = queue.enqueue(open_store(url), spec(SLOW), ["cpu"])
    log = tmp_path / "agent.log"
    proc = start_agent(url, tmp_path / "outbox", log, "--heartbeat", "0.5", "--stale-after", "30")
    try:
        wait_for(lambda: jobs(url)[0].state == "running", 60, "the job to be claimed", proc, log)
        time.sleep(1.0)  # well inside the run
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, tail(log)
    finally:
        stop_all([proc])
    [row] = jobs(url)
    assert (row.id, row.state, row.attempts, row.claimed_by, row.claim_token) == (job, "queued", 0, None, None)
    assert "handed job" in log.read_text()
    assert count(url, Run) == 0


@pytest.mark.postgres
def test_two_processes_upgrade_one_fresh_database(postgres_server):
    url = new_database(postgres_server)
    # both processes import first, then start the upgrade at the same instant
    at = time.time() + 4
    code = ("import sys, time; from runner.cli import app; import alembic.command, db.engine, db.models; "
            "time.sleep(max(0, float(sys.argv[1]) - time.time())); app(['db', 'upgrade', '--db', sys.argv[2]])")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(at), url], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert all(f"-> {head_revision()}" in o for o in outputs), outputs
    engine = make_engine(url)
    assert current_revision(engine) == head_revision()
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from db.models import Base

    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


@pytest.mark.postgres
def test_six_agents_drain_sixty_jobs_each_exactly_once(postgres_server, tmp_path):
    url = new_database(postgres_server)
    engine = open_store(url)
    ids = [i for _ in range(60) for i in queue.enqueue(engine, spec(LIGHT), ["cpu"])]
    procs = [start_agent(url, tmp_path / "outbox", tmp_path / f"agent{n}.log", "--once", "--poll-interval", "0.2",
                         "--name", f"agent{n}") for n in range(6)]
    try:
        for n, p in enumerate(procs):
            assert p.wait(timeout=240) == 0, tail(tmp_path / f"agent{n}.log")
    finally:
        stop_all(procs)
    rows = jobs(url)
    assert sorted(j.id for j in rows) == sorted(ids)
    assert {j.state for j in rows} == {"done"}  # none failed, none left claimed
    assert all(j.attempts == 1 for j in rows)  # each job ran once: never retried, never requeued
    with session_scope(engine) as s:
        run_ids = set(s.scalars(select(Run.id)))
    assert len(run_ids) == 60 and {j.run_id for j in rows} == run_ids  # one run per job, no strays
    ran = {j.claimed_by for j in rows}
    assert len(ran) >= 2, f"only {ran} did any work"  # the work was shared
    logs = "".join((tmp_path / f"agent{n}.log").read_text() for n in range(6))
    assert logs.count("done: run") == 60 and "failed" not in logs
    assert outbox.pending(tmp_path / "outbox") == []


@pytest.mark.postgres
def test_agent_killed_mid_job_is_requeued_and_completed_by_another(postgres_server, tmp_path):
    url = new_database(postgres_server)
    [job] = queue.enqueue(open_store(url), spec(SLOW), ["cpu"])
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    a = start_agent(url, tmp_path / "outbox-a", log_a, "--name", "doomed", "--heartbeat", "0.5",
                    "--stale-after", "3")
    procs = [a]
    try:
        wait_for(lambda: jobs(url)[0].state == "running", 60, "agent A to claim the job", a, log_a)
        time.sleep(1.0)
        os.killpg(a.pid, signal.SIGKILL)  # no chance to hand anything back
        a.wait()
        assert jobs(url)[0].state == "running"  # still claimed by the dead agent...
        time.sleep(3.5)  # ...until its heartbeat is stale
        b = start_agent(url, tmp_path / "outbox-b", log_b, "--name", "rescuer", "--once", "--heartbeat", "0.5",
                        "--stale-after", "3", "--poll-interval", "0.2")
        procs.append(b)
        assert b.wait(timeout=120) == 0, tail(log_b)
    finally:
        stop_all(procs)
    [row] = jobs(url)
    assert (row.id, row.state, row.attempts, row.claimed_by, row.error) == (job, "done", 2, "rescuer", None)
    assert "stale heartbeat: job(s) 1 -> queued" in log_b.read_text()
    with session_scope(make_engine(url)) as s:
        assert list(s.scalars(select(Run.id))) == [row.run_id]  # the killed attempt left nothing


@pytest.mark.postgres
def test_a_busy_agent_requeues_a_dead_agents_job(postgres_server, tmp_path):
    """Every agent busy: the job of an agent that died is requeued all the same, from a busy agent's heartbeats."""
    url = new_database(postgres_server)
    engine = open_store(url)
    [busy_job] = queue.enqueue(engine, spec(BUSY), ["cpu"])
    log = tmp_path / "busy.log"
    proc = start_agent(url, tmp_path / "outbox", log, "--name", "busy", "--heartbeat", "0.3", "--stale-after", "2")
    try:
        wait_for(lambda: jobs(url)[0].state == "running", 60, "the agent to start its job", proc, log)
        [dead_job] = queue.enqueue(engine, spec(LIGHT), ["cpu"])
        assert queue.claim_next(engine, "cpu", "dead-host:1").job_id == dead_job  # claimed, then never heartbeaten
        wait_for(lambda: {j.id: j.state for j in jobs(url)}[dead_job] == "queued", 30,
                 "the dead agent's job to be requeued", proc, log)
        rows = {j.id: j for j in jobs(url)}
        assert (rows[busy_job].state, rows[busy_job].claimed_by) == ("running", "busy")  # still on its own job
        assert "dead-host:1 stopped heartbeating" in rows[dead_job].error
        assert f"stale heartbeat: job(s) {dead_job} -> queued" in log.read_text()
    finally:
        stop_all([proc])


def test_a_run_stored_after_its_claim_went_stale_finishes_the_job(store_url, reference_docs):
    from db import store
    from tests.test_store import measured_doc

    engine = open_store(store_url)
    [job] = queue.enqueue(engine, spec(LIGHT), ["A100"])
    c = queue.claim_next(engine, "A100", "agent-behind-an-outage")
    time.sleep(1.1)
    assert queue.requeue_stale(engine, 1) == {"done": [], "failed": [], "queued": [job]}  # the outage outlasted it
    doc = measured_doc(reference_docs)
    store.push(engine, doc)  # the outbox replay, once the store is back
    assert queue.complete(engine, c.job_id, c.token, doc["run_id"])  # stored: must not run again
    [row] = jobs(store_url)
    assert (row.state, row.run_id) == ("done", doc["run_id"])
    assert queue.claim_next(engine, "A100", "another-agent") is None


def test_agent_fails_the_job_of_a_run_that_can_never_be_stored(tmp_path, reference_docs):
    from runner import devices
    from runner.fleet.agent import Agent
    from tests.test_store import measured_doc

    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    engine = open_store(url)
    [job] = queue.enqueue(engine, spec(LIGHT), ["cpu"])
    claim = queue.claim_next(engine, "cpu", "agent")
    box = tmp_path / "outbox"
    with outbox.keep(measured_doc(reference_docs), (claim.job_id, claim.token), box) as path:
        pass
    path.write_text("{ not a run document")  # e.g. a disk that corrupted it
    agent = Agent(engine, devices.detect("cpu"), outbox_dir=box, once=True)
    agent.held[claim.job_id] = claim  # the run waited in the outbox, its claim kept alive
    assert agent._replay()
    assert agent.held == {}  # no longer heartbeaten forever
    [row] = jobs(url)
    assert row.state == "queued" and "could not be stored" in row.error  # retried, with the reason
    assert (box / "rejected" / path.name).exists()
