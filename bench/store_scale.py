"""Store at fleet scale, on SQLite and PostgreSQL: ingest N run documents (164 HumanEval problem records each, two
batch sizes with raw repeats, a token probe), then time what people and agents wait on:
- ingest: the last --timed runs pushed one by one through db.store.push by two fleets in turn (an engine per device
  class, runs alternating 910B3 / A100), after the store was filled to N - --timed runs by db.store.push_many (the
  same insert, 100 runs per transaction);
- comparison: db.compare.build for one job (latest run of each device, perf + accuracy);
- trend: db.queries.trend, what the Trends page charts (one job, one metric, both devices and their ratio points);
- alert evaluation after one push: db.alerts.deliver.evaluate_and_deliver for the pushed job, as `runner push` and
  the agent run it (the push itself is not timed; the untimed warm-up judges the job from its first run and writes
  its checkpoint, as the first evaluation after an upgrade does, so the timed ones resume from it as pushes do);
- alert evaluation after a late push: the same after a host's outbox replays a run pushed late (an A100 run that
  finished before the job's 3 newest runs), so judging rewinds to the newest snapshot before it;
- the first judge of a job with no checkpoint (informational: the bulk fill skips evaluation, so a job's first
  evaluation judges its whole history), and the bytes of alert state the job keeps (checkpoint and snapshots);
- Overview: db.overview.overview (every job and device pair: ratios, changes, sparklines, alerts, ages);
- every trend of the pair over all jobs (db.trends.pair_trends, no target: its answer grows with history);
- the store's size on disk per run.

Targets at 100,000 runs, both backends: ingest >= 200 runs/s, comparison < 20 ms, trend < 150 ms, alert evaluation
< 100 ms, Overview < 300 ms. Query times are the median of --repeats calls after one warm-up.

Runs alternate 910B3 / A100 over --fingerprints jobs, one run every 10 minutes of simulated time. PostgreSQL:
--pg-url (or $DATABASE_URL) names a server whose given database is used as is; without one a throw-away cluster is
started (db/testing.py, as the tests do; fsync off). SQLite: a file in a temporary directory (WAL, synchronous FULL).

Run: .venv/bin/python -m bench.store_scale [--runs 100000] [--backends sqlite,postgresql]
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench._report import REPO, commit_stamp, write_section

# what this benchmark measures: a change to any of these makes its BENCHMARKS.md section stale (bench/status.py)
MEASURES = ["bench/store_scale.py", "db/store.py", "db/models.py", "db/engine.py", "db/pairing.py", "db/compare.py",
            "db/trends.py", "db/queries.py", "db/overview.py", "db/alerts", "core/metrics.py", "core/rules.py",
            "migrations/versions"]
CANDIDATE, BASELINE = "910B3", "A100"


def make_doc(i: int, fingerprints: int, problems: int, rng: random.Random, t0: dt.datetime) -> dict:
    """A measured-looking run document: run i of the sequence (device alternates, fingerprint cycles)."""
    device = CANDIDATE if i % 2 == 0 else BASELINE
    fp_index = (i // 2) % fingerprints
    finished = t0 + dt.timedelta(minutes=10 * i)
    speed = 9.0 if device == CANDIDATE else 16.5

    def stat(median: float) -> dict:
        raw = [round(median * rng.uniform(0.97, 1.03), 4) for _ in range(5)]
        return {"median": statistics.median(raw), "p10": min(raw), "p90": max(raw), "raw": raw}

    perf = [{"batch_size": bs, "prompt_tokens": 128, "new_tokens": 128, "warmup": 2, "repeats": 5,
             "ttft_ms": stat(800.0 / bs), "e2e_ms": stat(8000.0), "tpot_ms": stat(60.0),
             "first_token_tokens_per_s": stat(1.2 * bs), "decode_tokens_per_s": stat(speed * bs),
             "peak_memory_bytes": 40 * 2**30, "bandwidth_gbps": 600.0, "bandwidth_util": 0.35,
             "cpu_own_cores": 1.0, "cpu_other_cores": 0.05, "cpu_contention": False} for bs in (1, 4)]
    results = [{"task_id": f"HumanEval/{p}", "sample": 0, "passed": rng.random() < 0.33,
                "completion": "    result = []\n    for x in numbers:\n        result.append(x)\n" * 4,
                "verdict": "passed", "generated_tokens": rng.randint(20, 300), "generation_s": 1.5, "exec_s": 0.02}
               for p in range(problems)]
    for r in results:
        r["verdict"] = "passed" if r["passed"] else "failed: AssertionError"
    passed = sum(r["passed"] for r in results)
    name = f"scale-job-{fp_index}"
    spec = {"name": name, "model": {"name": "codellama/CodeLlama-34b-Instruct-hf", "path": None, "dtype": "float16",
                                    "tensor_parallel": 2, "revision": None},
            "perf": {"batch_sizes": [1, 4], "prompt_tokens": 128, "new_tokens": 128, "warmup": 2, "repeats": 5},
            "humaneval": None, "seed": fp_index}
    return {
        "format": "devcompare.run/1", "run_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "source": "measured", "imported_from": None, "missing": [],
        "started_at": (finished - dt.timedelta(minutes=9)).isoformat(), "finished_at": finished.isoformat(),
        "device": {"class": device, "type": "npu" if device == CANDIDATE else "cuda",
                   "name": "Ascend910B3" if device == CANDIDATE else "NVIDIA A100-SXM4-80GB", "count": 2},
        "environment": {"host": f"host-{device}", "python": "3.11.7", "torch": "2.5.1", "transformers": "4.56.0",
                        "cann": "8.0.0" if device == CANDIDATE else None},
        "job": {"name": name, "fingerprint": f"{fp_index:016x}", "spec": spec},
        "perf": perf,
        "humaneval": {"problems": problems, "samples_per_problem": 1, "passed": passed,
                      "pass_at_k": {"1": passed / problems}, "generation_s": 240.0, "execution_s": 3.0,
                      "results": results},
        "token_probe": {"tasks": ["HumanEval/0"], "tokens": [[rng.randint(0, 32000) for _ in range(64)]]},
    }


def timed(fn, repeats: int, setup=None) -> tuple[float, float]:
    """Median (wall, this process's CPU) time of fn() in ms, after one warm-up call; setup() runs untimed before each
    call. The CPU time leaves out the database server's and what other processes on the host took from us."""
    times = []
    for _ in range(repeats + 1):
        if setup is not None:
            setup()
        t, cpu = time.perf_counter(), time.process_time()
        fn()
        times.append(((time.perf_counter() - t) * 1e3, (time.process_time() - cpu) * 1e3))
    return statistics.median(w for w, _ in times[1:]), statistics.median(c for _, c in times[1:])


def disk_bytes(engine) -> int:
    if engine.dialect.name == "postgresql":
        from sqlalchemy import text

        with engine.connect() as conn:
            return conn.scalar(text("SELECT pg_database_size(current_database())"))
    path = Path(engine.url.database)
    with engine.connect() as conn:  # fold the WAL into the file first, so the file is the whole store
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def ingest(url: str, runs: int, timed_runs: int, docs) -> dict:
    """Fill the store to runs - timed_runs in bulk, then push the rest one by one, two fleets in turn."""
    from db import store
    from db.engine import make_engine, open_store

    fleets = {CANDIDATE: open_store(url), BASELINE: make_engine(url)}  # each fleet has its own connections
    bulk = runs - timed_runs
    t, i, chunk = time.perf_counter(), 0, 100
    while i < bulk:
        n = min(chunk, bulk - i)
        store.push_many(fleets[CANDIDATE], [docs(i + k) for k in range(n)])
        i += n
        if i % max(bulk // 10, chunk) < chunk:
            print(f"  {i}/{runs} runs (bulk, {i / (time.perf_counter() - t):.0f} runs/s)", file=sys.stderr, flush=True)
    bulk_s = time.perf_counter() - t
    push_s = cpu_s = 0.0
    load = os.getloadavg()[0]
    for i in range(bulk, runs):
        doc = docs(i)  # built outside the timer: only the push is measured
        t, cpu = time.perf_counter(), time.process_time()
        assert store.push(fleets[doc["device"]["class"]], doc)
        push_s += time.perf_counter() - t
        cpu_s += time.process_time() - cpu
    for engine in fleets.values():
        engine.dispose()
    return {"bulk_runs": bulk, "bulk_per_s": bulk / bulk_s if bulk else None, "timed_runs": timed_runs,
            "runs_per_s": timed_runs / push_s if timed_runs else None, "cpu_ms": cpu_s / timed_runs * 1e3,
            "ingest_load": load}


def late_doc(engine, fp: str, doc: dict) -> dict:
    """`doc` (an A100 run of job `fp`) as a run an outbox replays late: it finished before the job's 3 newest runs."""
    from sqlalchemy import select

    from db.engine import session_scope
    from db.models import Run, utc

    with session_scope(engine) as s:
        fourth = utc(s.scalars(select(Run.finished_at).where(Run.fingerprint == fp)
                               .order_by(Run.finished_at.desc()).offset(3).limit(1)).one())
    finished = fourth + dt.timedelta(minutes=1)
    doc.update(run_id=str(uuid.uuid4()), started_at=(finished - dt.timedelta(minutes=9)).isoformat(),
               finished_at=finished.isoformat())
    return doc


def alert_state_bytes(engine, fp: str) -> dict:
    """The JSON bytes of the alert state one job keeps: its checkpoint and its snapshots."""
    import json

    from sqlalchemy import select

    from db.engine import session_scope
    from db.models import AlertSeriesSnapshot, AlertSeriesState

    with session_scope(engine) as s:
        ckpt = [len(json.dumps(d)) for d in s.scalars(select(AlertSeriesState.data)
                                                      .where(AlertSeriesState.fingerprint == fp))]
        snaps = [len(json.dumps(d)) for d in s.scalars(select(AlertSeriesSnapshot.data)
                                                       .where(AlertSeriesSnapshot.fingerprint == fp))]
    return {"checkpoint": sum(ckpt), "snapshots": len(snaps), "per_snapshot": sum(snaps) / max(len(snaps), 1),
            "job": sum(ckpt) + sum(snaps)}


def bench_backend(url: str, args) -> dict:
    from core import rundoc
    from db import compare, overview, queries, store, trends
    from db.alerts.deliver import evaluate_and_deliver
    from db.engine import open_store, session_scope

    rng = random.Random(1234)
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    rundoc.validate(make_doc(0, args.fingerprints, args.problems, random.Random(0), t0))  # a real document's shape

    def docs(i: int) -> dict:
        return make_doc(i, args.fingerprints, args.problems, rng, t0)

    result = ingest(url, args.runs, min(args.timed, args.runs), docs)
    engine = open_store(url)
    fp = f"{(args.fingerprints // 2):016x}"
    first = f"{(args.fingerprints // 2 + 1) % args.fingerprints:016x}"  # a job no evaluation has judged yet

    def comparison():
        with session_scope(engine) as s:
            cmp = compare.build(s, fp, CANDIDATE, BASELINE)
            assert cmp.candidate_run is not None and cmp.baseline_run is not None and cmp.speed

    def trend():
        with session_scope(engine) as s:
            assert queries.trend(s, fp, CANDIDATE, BASELINE, "decode_tokens_per_s", 1)["ratios"]

    rows = 0

    def over():
        nonlocal rows
        with session_scope(engine) as s:
            rows = len(overview.overview(s))

    points = 0

    def all_trends():
        nonlocal points
        with session_scope(engine) as s:
            points = sum(len(p) for p in trends.pair_trends(s, CANDIDATE, BASELINE).values())

    # one more run of the job, then the evaluation `runner push` starts for it (the push is not timed)
    # a run index after every stored one that maps to job `fp` (run i is job (i // 2) % fingerprints), device 910B3
    n = args.runs + args.runs % 2 + 2 * ((args.fingerprints // 2 - (args.runs + 1) // 2) % args.fingerprints)
    extra = iter(range(n, n + 2 * args.fingerprints * 100, 2 * args.fingerprints))
    os.environ.pop("DEVCOMPARE_WEBHOOK_URL", None)
    result["load"] = os.getloadavg()[0]
    result.update(compare_ms=timed(comparison, args.repeats), trend_ms=timed(trend, args.repeats),
                  overview_ms=timed(over, args.repeats),
                  alerts_ms=timed(lambda: evaluate_and_deliver(engine, [fp]), args.alert_repeats,
                                  setup=lambda: store.push(engine, docs(next(extra)))),
                  late_alerts_ms=timed(lambda: evaluate_and_deliver(engine, [fp]), args.alert_repeats,
                                       setup=lambda: store.push(engine, late_doc(engine, fp, docs(next(extra) + 1)))),
                  first_judge_ms=timed(lambda: evaluate_and_deliver(engine, [first], rebuild=True), 1),
                  alert_state=alert_state_bytes(engine, fp),
                  all_trends_ms=timed(all_trends, 1), all_trend_points=points, overview_rows=rows)
    result["bytes_per_run"] = disk_bytes(engine) / args.runs
    engine.dispose()
    return result


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=100_000, help="run documents to ingest per backend")
    ap.add_argument("--timed", type=int, default=2_000, help="the last runs, pushed one by one and timed")
    ap.add_argument("--problems", type=int, default=164, help="HumanEval problem records per run")
    ap.add_argument("--fingerprints", type=int, default=50, help="distinct jobs the runs are spread over")
    ap.add_argument("--repeats", type=int, default=7, help="timed calls per query (median reported)")
    ap.add_argument("--alert-repeats", type=int, default=3, help="timed alert evaluations (each after a push)")
    ap.add_argument("--backends", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    ap.add_argument("--pg-url", default=os.environ.get("DATABASE_URL"),
                    help="PostgreSQL URL with a database part (default $DATABASE_URL; else a throw-away cluster)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = ap.parse_args(argv)

    measured_at = commit_stamp("store_scale", REPO)  # the code as it is now, before hours of ingest
    results, cluster = {}, None
    tmp = Path(tempfile.mkdtemp(prefix="devcompare-scale-"))
    try:
        for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
            if backend == "sqlite":
                url = f"sqlite:///{tmp / 'scale.db'}"
            elif backend == "postgresql":
                url = args.pg_url
                if url is None:
                    from db.testing import PgCluster, new_database

                    cluster = PgCluster()
                    url = new_database(cluster.url)
            else:
                raise SystemExit(f"unknown backend {backend!r} (sqlite, postgresql)")
            print(f"{backend}: ingesting {args.runs} runs x {args.problems} problem records", file=sys.stderr)
            results[backend] = bench_backend(url, args)
            print(f"{backend}: {results[backend]}", file=sys.stderr)
    finally:
        if cluster is not None:
            cluster.remove()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    body = report(results, args)
    print(body)
    if not args.no_write:
        write_section("store_scale", "Store at scale: ingest, comparison, trend, alerts and Overview (SQLite, "
                                     "PostgreSQL)", body, measured_at=measured_at)


def report(results: dict, args) -> str:
    def cell(key: str, r: dict, target: float) -> str:
        wall, cpu = r[key]
        return f"{wall:.1f} ({'ok' if wall < target else 'MISSED'}; CPU {cpu:.1f})"

    lines = [f"{args.runs:,} runs ({args.runs // 2:,} per device, {args.fingerprints} jobs), {args.problems} problem "
             f"records and 2 batch sizes each. Ingest: the store filled to {args.runs - args.timed:,} runs in bulk "
             f"(`db.store.push_many`, 100 runs a transaction), then the last {args.timed:,} pushed one by one "
             "(`db.store.push`, one transaction each) by two fleets in turn. Queries: median of "
             f"{args.repeats} (alert evaluation: of {args.alert_repeats}, each after a push). Times are wall clock, "
             "judged against the targets; beside them the benchmark process's own CPU time (no database server, "
             "no time other processes took), and the host's 1-minute load average when the phase began.", "",
             "| backend | ingest at scale (runs/s) | client CPU per push (ms) | bulk fill (runs/s) "
             "| comparison (ms) | trend (ms) | alert evaluation after a push (ms) "
             "| alert evaluation after a late push (ms) | Overview (ms) "
             "| all trends of the pair (ms) | disk per run | load (ingest / queries) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for backend, r in results.items():
        bulk = f"{r['bulk_per_s']:.0f}" if r["bulk_per_s"] else "-"
        rate = f"{r['runs_per_s']:.0f} ({'ok' if r['runs_per_s'] >= 200 else 'MISSED'})"
        lines.append(
            f"| {backend} | {rate} | {r['cpu_ms']:.1f} | {bulk} | {cell('compare_ms', r, 20)} "
            f"| {cell('trend_ms', r, 150)} | {cell('alerts_ms', r, 100)} | {cell('late_alerts_ms', r, 100)} "
            f"| {cell('overview_ms', r, 300)} "
            f"| {r['all_trends_ms'][0]:.0f} ({r['all_trend_points']:,} points) | {r['bytes_per_run'] / 1024:.0f} KiB "
            f"| {r['ingest_load']:.1f} / {r['load']:.1f} |")
    lines += ["", "| backend | first judge of a job with no checkpoint (ms) | alert state per job: checkpoint "
              "| snapshots | bytes per snapshot | all |", "|---|---|---|---|---|---|"]
    for backend, r in results.items():
        a = r["alert_state"]
        lines.append(f"| {backend} | {r['first_judge_ms'][0]:.0f} (CPU {r['first_judge_ms'][1]:.0f}) "
                     f"| {a['checkpoint']:,} B | {a['snapshots']} | {a['per_snapshot']:,.0f} B | {a['job']:,} B |")
    lines += ["", "Targets: ingest >= 200 runs/s, comparison < 20 ms, trend < 150 ms, alert evaluation < 100 ms "
              "(after a push, and after a late push: an outbox replaying an A100 run that finished before the job's "
              "3 newest runs, which rewinds judging to the newest snapshot before it), "
              "Overview < 300 ms. Comparison: `db.compare.build` for one job; trend: `db.queries.trend` for one job "
              "and metric (the Trends page's chart); alert evaluation: `db.alerts.deliver.evaluate_and_deliver` for "
              "the pushed job; Overview: `db.overview.overview` "
              f"({next(iter(results.values()))['overview_rows']} rows); all trends: `db.trends.pair_trends` over "
              "every job (no target: its answer grows with history). Disk: the SQLite file, or "
              "`pg_database_size`, over the runs.",
              f"Command: `.venv/bin/python -m bench.store_scale --runs {args.runs}"
              f"{'' if args.alert_repeats == 3 else f' --alert-repeats {args.alert_repeats}'}`"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
