"""Fleet mode: the job queue on SQLite and PostgreSQL, agents as real processes, and nothing lost.

- queue semantics (claim, heartbeat, retry, hand back, stale requeue, cancel) and concurrent claims, both backends;
- `runner enqueue` / `runner jobs` / `runner agent` through the CLI; a failing job is retried, then failed;
- 6 agent processes drain 60 jobs from one PostgreSQL: every job runs exactly once, none is left claimed;
- an agent killed with SIGKILL mid-job: the job is requeued and completed by another agent;
- SIGTERM mid-job hands the job back;
- the PostgreSQL server stopped during a push and during a run: no partial run, the run arrives from the outbox
  exactly once when the server is back;
- two processes upgrading one fresh PostgreSQL database at once.

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
from pathlib import Path

import pytest
from sqlalchemy import event, func, select
from typer.testing import CliRunner

from db import queue
from db.engine import head_revision, make_engine, open_store, current_revision, session_scope
from db.models import AccuracyRecord, PerfRecord, ProblemResult, QueueJob, Run
from runner import outbox
from runner.cli import app
from core.errors import StoreError
from runner.spec import parse_spec
from tests.conftest import PgCluster, _new_pg_database

REPO = Path(__file__).resolve().parent.parent
LIGHT = {"name": "fleet-light", "seed": 1234, "model": {"name": "tiny-random-llama"},
         "perf": {"batch_sizes": [1], "prompt_tokens": 8, "new_tokens": 4, "warmup": 0, "repeats": 1},
         "humaneval": {"problems": "first:1", "max_new_tokens": 8}}
# long enough (several seconds) that a test can act while it runs
SLOW = {**LIGHT, "name": "fleet-slow", "perf": {**LIGHT["perf"], "new_tokens": 16, "repeats": 150}}


def spec(data: dict):
    return parse_spec(data)


def jobs(url: str) -> list[QueueJob]:
    engine = make_engine(url)
    try:
        with session_scope(engine) as s:
            return list(s.scalars(select(QueueJob).order_by(QueueJob.id)))
    finally:
        engine.dispose()


def count(url: str, model) -> int:
    engine = make_engine(url)
    try:
        with session_scope(engine) as s:
            return s.scalar(select(func.count()).select_from(model))
    finally:
        engine.dispose()


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"agent exited ({proc.returncode}) while waiting for {what}:\n{_tail(log)}")
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}" + (f":\n{_tail(log)}" if log else ""))


def _tail(log: Path | None) -> str:
    return "\n".join(log.read_text().splitlines()[-40:]) if log and log.exists() else ""


def start_agent(url: str, outbox_dir: Path, log: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "DEVCOMPARE_DB_URL": url, "DEVCOMPARE_OUTBOX": str(outbox_dir), "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "runner.cli", "agent", "--device", "cpu", *args],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, cwd=REPO,
                            start_new_session=True)  # a Ctrl-C of the test run does not hit the agents


def stop_all(procs) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)  # its own session: the agent and any child it started
            p.wait()


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
        assert proc.wait(timeout=30) == 0, _tail(log)
    finally:
        stop_all([proc])
    [row] = jobs(url)
    assert (row.id, row.state, row.attempts, row.claimed_by, row.claim_token) == (job, "queued", 0, None, None)
    assert "handed job" in log.read_text()
    assert count(url, Run) == 0


@pytest.mark.postgres
def test_two_processes_upgrade_one_fresh_database(postgres_server):
    url = _new_pg_database(postgres_server)
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
    url = _new_pg_database(postgres_server)
    engine = open_store(url)
    ids = [i for _ in range(60) for i in queue.enqueue(engine, spec(LIGHT), ["cpu"])]
    procs = [start_agent(url, tmp_path / "outbox", tmp_path / f"agent{n}.log", "--once", "--poll-interval", "0.2",
                         "--name", f"agent{n}") for n in range(6)]
    try:
        for n, p in enumerate(procs):
            assert p.wait(timeout=240) == 0, _tail(tmp_path / f"agent{n}.log")
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
    url = _new_pg_database(postgres_server)
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
        assert b.wait(timeout=120) == 0, _tail(log_b)
    finally:
        stop_all(procs)
    [row] = jobs(url)
    assert (row.id, row.state, row.attempts, row.claimed_by, row.error) == (job, "done", 2, "rescuer", None)
    assert "stale heartbeat: job(s) 1 -> queued" in log_b.read_text()
    with session_scope(make_engine(url)) as s:
        assert list(s.scalars(select(Run.id))) == [row.run_id]  # the killed attempt left nothing


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

    url = _new_pg_database(own_postgres.url)
    engine = open_store(url)
    [job] = queue.enqueue(engine, spec(LIGHT), ["910B3"])
    claim = queue.claim_next(engine, "910B3", "agent")
    doc = make_doc(0, 1, 164, random.Random(1), dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))

    @event.listens_for(engine, "before_cursor_execute")
    def crash_the_server(conn, cursor, statement, *args):
        if statement.startswith("INSERT INTO problem_results"):  # the run and its perf rows are already sent
            event.remove(engine, "before_cursor_execute", crash_the_server)
            own_postgres.stop("immediate")

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
    url = _new_pg_database(own_postgres.url)
    [job] = queue.enqueue(open_store(url), spec(SLOW), ["cpu"])
    box, log = tmp_path / "outbox", tmp_path / "agent.log"
    proc = start_agent(url, box, log, "--once", "--heartbeat", "0.5", "--stale-after", "60", "--poll-interval", "0.5")
    try:
        wait_for(lambda: jobs(url)[0].state == "running", 60, "the job to be claimed", proc, log)
        own_postgres.stop("immediate")  # the store dies while the model runs
        wait_for(lambda: outbox.pending(box), 120, "the finished run to land in the outbox", proc, log)
        time.sleep(1.0)  # the agent keeps polling a dead store, it does not exit
        assert proc.poll() is None, _tail(log)
        own_postgres.start()
        assert proc.wait(timeout=60) == 0, _tail(log)
    finally:
        stop_all([proc])
    [row] = jobs(url)
    assert (row.id, row.state, row.attempts) == (job, "done", 1)
    with session_scope(make_engine(url)) as s:
        assert list(s.scalars(select(Run.id))) == [row.run_id]
    assert outbox.pending(box) == []
    text = log.read_text()
    assert "kept in the outbox" in text and "replayed run" in text


# -- trends for a device pair (db/trends.py) ---------------------------------------------------------------------------

def _run(reference_docs, device: str, at: str, decode: dict[int, float], pass_at_1: float | None,
         fingerprint: str = "f" * 16) -> dict:
    import copy
    import uuid

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
    from db import queries, store, trends

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
        assert trends.pair_trends(s, "910B3", "A100", fingerprint="e" * 16) == {}
        with pytest.raises(Exception, match="both A100"):
            trends.pair_trends(s, "A100", "A100")


@pytest.mark.postgres
def test_submit_keeps_its_run_in_the_outbox_when_the_store_dies_during_the_run(own_postgres, tmp_path, monkeypatch):
    import runner.submit

    url = _new_pg_database(own_postgres.url)
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
    from runner.agent import Agent
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
