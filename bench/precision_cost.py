"""Benchmark: what the precision pass adds to the demo job's run time.

Pairs of `runner submit --device cpu --job jobs/demo-cpu.toml --out FILE`, one with the job's [precision] section and
one without it, back to back, the order alternating from pair to pair so that a drift in the host's load falls on
both sides alike. Each run's wall time is the whole command (start, model load, perf, token probe, precision pass,
HumanEval). Two measures of the cost: the paired difference of wall times, and within each run with the pass the
pass's own time (the run document's precision.seconds) against the rest of that run, which the host's load shifts
least. Target: the pass adds at most 10%.

Run: .venv/bin/python -m bench.precision_cost [--pairs 3]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._report import write_section

# the whole `runner submit` of the demo job is timed: a change to any of these makes the section stale
MEASURES = ["runner", "core", "jobs/demo-cpu.toml"]

REPO = Path(__file__).resolve().parent.parent
JOB = REPO / "jobs" / "demo-cpu.toml"
TARGET = 0.10


def _jobs(tmp: Path) -> dict[bool, Path]:
    """The demo job as shipped (with the pass) and the same job without its [precision] section."""
    from runner.spec import load_spec

    text = JOB.read_text()
    head, _, tail = text.partition("\n[precision]")
    assert "\n[" not in tail, "[precision] must be the demo job's last section"
    off = tmp / "demo-cpu-no-precision.toml"
    off.write_text(head + "\n")
    on, plain = load_spec(JOB), load_spec(off)
    assert on.precision is not None and plain.precision is None and on.perf == plain.perf
    return {True: JOB, False: off}


def _run(job: Path, out: Path) -> tuple[float, dict]:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "runner.cli", "submit", "--device", "cpu", "--job", str(job), "--out",
                    str(out)], check=True, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0, json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=3)
    args = ap.parse_args()
    rows, paired, within = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        jobs = _jobs(Path(tmp))
        for pair in range(args.pairs):
            walls, load = {}, os.getloadavg()[0]
            for with_pass in ((False, True) if pair % 2 == 0 else (True, False)):
                walls[with_pass], doc = _run(jobs[with_pass], Path(tmp) / f"{pair}-{with_pass}.json")
                if with_pass:
                    seconds = doc["precision"]["seconds"]
            paired.append(walls[True] / walls[False] - 1)
            within.append(seconds / (walls[True] - seconds))
            rows.append(f"| {pair + 1} | {walls[False]:.1f} | {walls[True]:.1f} | {paired[-1]:+.1%} | {seconds:.1f} | "
                        f"{within[-1]:.1%} | {load:.1f} |")
    median_within, median_paired = statistics.median(within), statistics.median(paired)
    verdict = "meets" if median_within <= TARGET else "MISSES"
    body = f"""Demo job (`jobs/demo-cpu.toml`: SmolLM2-135M-Instruct fp32 on CPU, perf at batch 1 and 4, 10 HumanEval
problems) run by `runner submit` with and without its `[precision]` section (3 HumanEval prompts, every decoder
layer, the final norm and the logits, 4096-bucket sketches), {args.pairs} back-to-back pairs, order alternating.
Target: the pass adds at most {TARGET:.0%} to the job's run time.

| pair | without (s) | with (s) | paired difference | pass (s) | pass / rest of its run | host load (1 min) |
|---|---|---|---|---|---|---|
{chr(10).join(rows)}

**The pass adds {median_within:.1%} of the job's run time** (median over the runs with it of the pass's own time
against the rest of the run; {verdict} the target). The paired wall-time differences (median {median_paired:+.1%})
carry the host's load as noise: other work shares this machine's {os.cpu_count()} cores."""
    print(body)
    write_section("precision_cost", "Precision pass: cost on the demo job", body)


if __name__ == "__main__":
    main()
