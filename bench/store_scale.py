"""Store at fleet scale, on SQLite and PostgreSQL: ingest N run documents (164 HumanEval problem records each,
two batch sizes with raw repeats, a token probe), then time the two read paths people wait on:
- the comparison query for one fingerprint (db.compare.build: latest run of each device, perf + accuracy);
- the trend query for one device pair (db.trends.pair_trends: every series of every fingerprint).

Targets: ingest >= 50 runs/s through db.store.push (one transaction per run, as agents push), comparison
< 100 ms and trend < 300 ms at 10,000 runs. Query times are the median of --repeats calls after one warm-up.

Runs alternate 910B3 / A100 over --fingerprints jobs, one run every 10 minutes of simulated time, so the device
pair covers every run (the trend query's worst case). PostgreSQL: --pg-url (or $DATABASE_URL) names a server whose
given database is used as is; without one a throw-away cluster is started (db/testing.py, as the tests do).

Run: .venv/bin/python -m bench.store_scale [--runs 10000] [--backends sqlite,postgresql]
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

from bench._report import write_section

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


def timed(fn, repeats: int) -> float:
    """Median wall time of fn() in ms, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def bench_backend(url: str, runs: int, fingerprints: int, problems: int, repeats: int) -> dict:
    from db import compare, store, trends
    from db.engine import open_store, session_scope
    from core import rundoc

    engine = open_store(url)
    rng = random.Random(1234)
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    rundoc.validate(make_doc(0, fingerprints, problems, random.Random(0), t0))  # the synthetic shape is a real one
    push_s = 0.0
    step = max(runs // 10, 1)
    for i in range(runs):
        doc = make_doc(i, fingerprints, problems, rng, t0)  # built outside the timer: only the push is measured
        t = time.perf_counter()
        store.push(engine, doc)
        push_s += time.perf_counter() - t
        if (i + 1) % step == 0:
            print(f"  {i + 1}/{runs} runs, {(i + 1) / push_s:.0f} runs/s", file=sys.stderr, flush=True)
    fp = f"{(fingerprints // 2):016x}"

    def comparison():
        with session_scope(engine) as s:
            cmp = compare.build(s, fp, CANDIDATE, BASELINE)
            assert cmp.candidate_run is not None and cmp.baseline_run is not None and cmp.speed

    points = 0

    def trend():
        nonlocal points
        with session_scope(engine) as s:
            series = trends.pair_trends(s, CANDIDATE, BASELINE)
        points = sum(len(p) for p in series.values())

    result = {"runs_per_s": runs / push_s, "ingest_s": push_s, "compare_ms": timed(comparison, repeats),
              "trend_ms": timed(trend, repeats)}
    result["trend_points"] = points
    engine.dispose()
    return result


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10_000, help="run documents to ingest per backend")
    ap.add_argument("--problems", type=int, default=164, help="HumanEval problem records per run")
    ap.add_argument("--fingerprints", type=int, default=50, help="distinct jobs the runs are spread over")
    ap.add_argument("--repeats", type=int, default=7, help="timed calls per query (median reported)")
    ap.add_argument("--backends", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    ap.add_argument("--pg-url", default=os.environ.get("DATABASE_URL"),
                    help="PostgreSQL URL with a database part (default $DATABASE_URL; else a throw-away cluster)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = ap.parse_args(argv)

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
            results[backend] = bench_backend(url, args.runs, args.fingerprints, args.problems, args.repeats)
            print(f"{backend}: {results[backend]}", file=sys.stderr)
    finally:
        if cluster is not None:
            cluster.remove()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)

    def verdict(ok: bool) -> str:
        return "ok" if ok else "MISSED"

    lines = [f"{args.runs:,} runs ({args.runs // 2:,} per device, {args.fingerprints} fingerprints), "
             f"{args.problems} problem records and 2 batch sizes each; queries: median of {args.repeats}.", "",
             "| backend | ingest (runs/s) | ingest time (s) | comparison query (ms) | trend query (ms) "
             "| trend points |", "|---|---|---|---|---|---|"]
    for backend, r in results.items():
        lines.append(f"| {backend} | {r['runs_per_s']:.0f} ({verdict(r['runs_per_s'] >= 50)}) | {r['ingest_s']:.0f} "
                     f"| {r['compare_ms']:.1f} ({verdict(r['compare_ms'] < 100)}) "
                     f"| {r['trend_ms']:.1f} ({verdict(r['trend_ms'] < 300)}) | {r['trend_points']:,} |")
    lines += ["", "Targets: ingest >= 50 runs/s, comparison < 100 ms, trend < 300 ms. Ingest goes through "
              "`db.store.push` (one transaction per run, as an agent pushes); comparison is `db.compare.build` for "
              "one fingerprint, trend is `db.trends.pair_trends` for 910B3 vs A100 over every fingerprint.",
              f"Command: `.venv/bin/python -m bench.store_scale --runs {args.runs}`"]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section("store_scale", "Store at scale: ingest, comparison and trend queries (SQLite, PostgreSQL)",
                      body)


if __name__ == "__main__":
    main()
