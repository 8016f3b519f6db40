"""What the fleet tests share: job specs light enough for many agent runs, store look-ups, agent processes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from db.engine import make_engine, session_scope
from db.models import QueueJob
from runner.spec import parse_spec

REPO = Path(__file__).resolve().parent.parent
LIGHT = {"name": "fleet-light", "seed": 1234, "model": {"name": "tiny-random-llama"},
         "perf": {"batch_sizes": [1], "prompt_tokens": 8, "new_tokens": 4, "warmup": 0, "repeats": 1},
         "humaneval": {"problems": "first:1", "max_new_tokens": 8}}
# long enough (several seconds) that a test can act while it runs
SLOW = {**LIGHT, "name": "fleet-slow", "perf": {**LIGHT["perf"], "new_tokens": 16, "repeats": 150}}
# busy for a minute or more: outlasts whatever a test does meanwhile (the test stops the agent)
BUSY = {**SLOW, "name": "fleet-busy", "perf": {**SLOW["perf"], "repeats": 3000}}


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
            pytest.fail(f"agent exited ({proc.returncode}) while waiting for {what}:\n{tail(log)}")
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}" + (f":\n{tail(log)}" if log else ""))


def tail(log: Path | None) -> str:
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
