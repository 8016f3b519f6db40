"""Benchmark: server-side time to build the dashboard's Compare page (target: < 1 s) and its Overview page with
10,000 runs in the store.

The store is seeded with bulk inserts (SQLAlchemy core, many rows per statement), not 10,000 pushes: 25 jobs x 4
device classes x 100 runs, each run with perf records at 3 batch sizes (5 raw repeats each), an accuracy record,
20 per-problem results and a token probe; then the per-job summary that pushes keep is rebuilt
(db.store.rebuild_summary). Each page then runs in Streamlit's AppTest (the script as the server executes it):
"cold" with the query caches cleared, so every query (and the Compare page's bootstrap intervals) runs; "warm" with
them cached, as on a second view within the cache TTL. The engine (schema check) is opened once beforehand,
as a running server has it.

Run: .venv/bin/python -m bench.dashboard_speed [--runs 10000] [--repeats 5] [--db URL of an empty store | --pg]
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from bench._report import REPO, commit_stamp, write_section

# what this benchmark measures: a change to any of these makes its BENCHMARKS.md sections stale (bench/status.py)
MEASURES = ["bench/dashboard_speed.py", "dashboard", "db/queries.py", "db/compare.py", "db/stats.py", "db/tables.py",
            "db/pairing.py", "db/models.py", "db/engine.py", "db/store.py", "core/metrics.py", "core/rules.py"]
APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")
DEVICES = (("910B3", "npu", "Ascend910B3"), ("A100", "cuda", "NVIDIA A100-SXM4-80GB"), ("H100", "cuda", "NVIDIA H100"),
           ("cpu", "cpu", "AMD EPYC"))
JOBS = 25
BATCH_SIZES = (1, 4, 16)
PROBLEMS = 20
REPEATS = 5
CHUNK = 5000  # rows per executemany: large enough to amortise round trips, small enough for PostgreSQL's parameters


def seed(engine, runs: int) -> dict:
    """Bulk-insert `runs` runs with their records; returns row counts."""
    from sqlalchemy import insert

    from db.models import AccuracyRecord, PerfRecord, ProblemResult, Run
    from db.store import rebuild_summary

    rng = random.Random(0)
    t0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    fingerprints = [f"{i:016x}" for i in range(1, JOBS + 1)]
    speed = {"910B3": 0.55, "A100": 1.0, "H100": 1.6, "cpu": 0.01}
    run_rows, perf_rows, acc_rows, problem_rows = [], [], [], []
    for i in range(runs):
        fp = fingerprints[i % JOBS]
        device, dtype, name = DEVICES[(i // JOBS) % len(DEVICES)]
        run_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        finished = t0 + dt.timedelta(minutes=7 * i)
        spec = {"name": f"job-{fp[-4:]}", "model": {"name": "codellama/CodeLlama-34b-Instruct-hf", "dtype": "float16",
                                                     "tensor_parallel": 2}, "seed": 1234}
        run_rows.append(dict(
            id=run_id, fingerprint=fp, job_name=spec["name"], model_name=spec["model"]["name"], dtype="float16",
            tensor_parallel=2, device_class=device, device_type=dtype, device_name=name, device_count=2,
            source="measured", imported_from=None, missing=[], started_at=finished - dt.timedelta(hours=1),
            finished_at=finished, pushed_at=finished, spec=spec, extra=None,
            environment={"torch": "2.1.0", "transformers": "4.44.0", "cann": "8.0.RC2" if dtype == "npu" else None,
                         "cuda": "12.1" if dtype == "cuda" else None, "driver": "x", "python": "3.10.14"},
            token_probe={"tasks": ["HumanEval/0", "HumanEval/1"],
                         "tokens": [[1, 2, 3, 4], [5, 6, 7, rng.randint(0, 9)]]}))
        for bs in BATCH_SIZES:
            decode = [bs * 16.5 * speed[device] * rng.uniform(0.97, 1.03) for _ in range(REPEATS)]
            first = [bs * 18.0 * speed[device] * rng.uniform(0.97, 1.03) for _ in range(REPEATS)]
            perf_rows.append(dict(
                run_id=run_id, batch_size=bs, prompt_tokens=128, new_tokens=128, warmup=2, repeats=REPEATS,
                first_token_tokens_per_s=statistics.median(first), decode_tokens_per_s=statistics.median(decode),
                raw={"first_token_tokens_per_s": first, "decode_tokens_per_s": decode},
                bandwidth_gbps=300.0, bandwidth_util=0.2, peak_memory_bytes=40 * 2**30, cpu_contention=False))
        outcomes = [rng.random() < 0.35 for _ in range(PROBLEMS)]
        acc_rows.append(dict(run_id=run_id, problems=PROBLEMS, samples_per_problem=1, passed=sum(outcomes),
                             pass_at_1=sum(outcomes) / PROBLEMS, pass_at_k={"1": sum(outcomes) / PROBLEMS}))
        problem_rows += [dict(run_id=run_id, task_id=f"HumanEval/{k}", sample=0, completion="    return 1\n",
                              passed=ok, verdict="passed" if ok else "failed: AssertionError", generated_tokens=5)
                         for k, ok in enumerate(outcomes)]
    with engine.begin() as conn:
        for model, rows in ((Run, run_rows), (PerfRecord, perf_rows), (AccuracyRecord, acc_rows),
                            (ProblemResult, problem_rows)):
            for start in range(0, len(rows), CHUNK):
                conn.execute(insert(model.__table__), rows[start:start + CHUNK])
    rebuild_summary(engine)  # inserted around db.store.push, which keeps it
    return {"runs": len(run_rows), "perf records": len(perf_rows), "problem results": len(problem_rows)}


PAGES = ("views/compare.py", "views/overview.py")


def time_pages(repeats: int) -> dict:
    """Times of AppTest.run() on one AppTest, per page: its first run (the default page) also scans the installed
    packages for components (once per AppTest; a server does it once at start) and imports the pages' libraries."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=60)

    def once() -> float:
        start = time.perf_counter()
        at.run()
        elapsed = time.perf_counter() - start
        if at.exception:
            raise RuntimeError(at.exception[0].message)
        return elapsed

    out: dict = {"first": once()}
    for page in PAGES:
        at.switch_page(page)
        cold, warm = [], []
        for _ in range(repeats):
            st.cache_data.clear()
            cold.append(once())
            warm.append(once())
        out[page] = {"cold": cold, "warm": warm}
        if page == "views/compare.py":
            out.update(job=at.selectbox(key="job").value, tables=len(at.table))
    return out


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=5, help="timed page builds, cold and warm each")
    ap.add_argument("--db", help="an empty store to seed (default: a temporary SQLite file)")
    ap.add_argument("--pg", action="store_true", help="seed a throw-away PostgreSQL cluster (db/testing.py)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = ap.parse_args()

    from db.engine import open_store

    measured_at, cluster = commit_stamp("dashboard_speed", REPO), None
    if args.pg:
        from db.testing import PgCluster, new_database

        cluster = PgCluster()
        args.db = new_database(cluster.url)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            url = args.db or f"sqlite:///{Path(tmp) / 'bench.db'}"
            engine = open_store(url)
            start = time.perf_counter()
            counts = seed(engine, args.runs)
            seed_s = time.perf_counter() - start
            os.environ["DEVCOMPARE_DB_URL"] = url
            t = time_pages(args.repeats)
            backend = engine.dialect.name
            engine.dispose()
    finally:
        if cluster is not None:
            cluster.remove()
    body = (
        f"Store: {backend} ({'throw-away cluster' if args.pg else 'given with --db' if args.db else 'temporary file'}"
        "), seeded with bulk inserts and the per-job summary rebuilt in "
        f"{seed_s:.1f} s: " + ", ".join(f"{n:,} {k}" for k, n in counts.items()) + f" ({JOBS} jobs x "
        f"{len(DEVICES)} device classes).\n\n"
        "| page build (server side, AppTest.run) | median | max |\n|---|---|---|\n"
        + "".join(f"| {title}, {kind} | {ms(statistics.median(t[page][kind]))} | {ms(max(t[page][kind]))} |\n"
                  for page, title in (("views/compare.py", "Compare"), ("views/overview.py", "Overview"))
                  for kind in ("cold", "warm"))
        + f"| first view in a fresh process (the default page, Overview: imports, engine, AppTest's component "
        f"scan) | {ms(t['first'])} | |\n\n"
        "Cold: query caches cleared, so every query runs (Compare: also the bootstrap intervals); warm: cached "
        "query results, as on a second view within the cache TTL.\n"
        f"Target: the Compare page under 1 s with 10,000 runs (cold); the Overview has none of its own (its query: "
        f"bench/store_scale.py). The Compare page showed job {t['job']} (the newest with 910B3 and A100 "
        f"runs), {t['tables']} tables; {args.repeats} builds each.\n"
        f"Run: `.venv/bin/python -m bench.dashboard_speed"
        f"{' --pg' if args.pg else ' --db URL-of-an-empty-store' if args.db else ''}`")
    print(body)
    if not args.no_write:  # one section per backend: a PostgreSQL run does not replace the SQLite one
        name = "dashboard_speed" if backend == "sqlite" else f"dashboard_speed_{backend}"
        write_section(name, f"Dashboard: Compare and Overview page build times with {args.runs:,} runs, {backend} "
                            "(bench/dashboard_speed.py)", body, measured_at=measured_at)


if __name__ == "__main__":
    main()
