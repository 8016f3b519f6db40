"""Alert quality on simulated series: how often db/detect.py catches a drop, and how often it cries wolf.

Each device's metric gets log-normal run-to-run noise with a given coefficient of variation (CV); a drop is applied
to the candidate from a known run on. Reported, for the default speed rule:
- detection: the share of trials whose alert is active within 2 runs of the drop (suspected on the first, active
  on the second), per noise CV x drop size, and within 4 runs;
- false alerts: active alerts per 100 runs of stable series, and lone suspected runs (outliers) per 100 runs.
Targets (issue 7): <= 1 false active alert per 100 stable runs at every noise level; a 10% drop at CV <= 2% active
within 2 runs in >= 95% of trials. Seeded; the section is written into BENCHMARKS.md; exit code 1 if a target is missed.

Run: .venv/bin/python -m bench.alert_quality   (about a minute on 2 cores)
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import math
import os
import sys
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from bench._report import write_section
from db.detect import DEFAULT_RULES, Point, evaluate_series

CVS = (0.01, 0.02, 0.03, 0.05)  # per-device run-to-run noise
DROPS = (0.05, 0.10, 0.20, 0.30)  # fall of the candidate
CANDIDATE, BASELINE = 8.932, 16.551  # decode tokens/s of the reference report (910B3, A100)
RULE = DEFAULT_RULES["decode_tokens_per_s"]
PRE = RULE.window + 10  # stable runs before the drop: a full baseline window
AFTER = 4  # runs observed after the drop
STABLE_RUNS = 200  # length of each stable series
T0 = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
SEED = 20250301


def simulate(rng: np.random.Generator, cv: float, n: int, drop: float = 0.0, at: int | None = None) -> list[Point]:
    sigma = math.sqrt(math.log1p(cv * cv))  # log-normal with mean 1 and the given CV
    noise = rng.normal(-sigma * sigma / 2, sigma, (2, n))
    cand, base = CANDIDATE * np.exp(noise[0]), BASELINE * np.exp(noise[1])
    if at is not None:
        cand[at:] *= 1 - drop
    return [Point(T0 + dt.timedelta(hours=i), float(cand[i]), float(base[i]), f"c{i}", f"b{i}") for i in range(n)]


def detection_cell(args: tuple[float, float, int, np.random.SeedSequence]) -> dict:
    cv, drop, trials, seed = args
    rng = np.random.default_rng(seed)
    within2 = within4 = said_candidate = 0
    for _ in range(trials):
        verdicts = evaluate_series(simulate(rng, cv, PRE + AFTER, drop, PRE), RULE).verdicts[PRE:]
        states = [v.state for v in verdicts]
        within2 += states[1] == "active"
        if "active" in states:
            within4 += 1
            said_candidate += verdicts[states.index("active")].moved == "candidate fell"
    return {"cv": cv, "drop": drop, "within2": within2 / trials, "within4": within4 / trials,
            "said_candidate": said_candidate / max(within4, 1)}


def stable_cell(args: tuple[float, int, np.random.SeedSequence]) -> dict:
    cv, series, seed = args
    rng = np.random.default_rng(seed)
    active = outliers = 0
    for _ in range(series):
        for alert in evaluate_series(simulate(rng, cv, STABLE_RUNS), RULE).alerts:
            active += alert.state in ("active", "resolved")  # every resolved alert was active first
            outliers += alert.state == "outlier"
    runs = series * STABLE_RUNS
    return {"cv": cv, "active_per_100": 100 * active / runs, "outliers_per_100": 100 * outliers / runs,
            "runs": runs}


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000, help="trials per noise x drop cell (default 1000)")
    parser.add_argument("--stable-series", type=int, default=200,
                        help=f"stable series of {STABLE_RUNS} runs per noise level (default 200)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)

    seeds = iter(np.random.SeedSequence(SEED).spawn(len(CVS) * len(DROPS) + len(CVS)))
    det_jobs = [(cv, d, args.trials, next(seeds)) for cv in CVS for d in DROPS]
    stable_jobs = [(cv, args.stable_series, next(seeds)) for cv in CVS]
    with ProcessPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        det = {(r["cv"], r["drop"]): r for r in pool.map(detection_cell, det_jobs)}
        stable = {r["cv"]: r for r in pool.map(stable_cell, stable_jobs)}

    head = "| noise CV (each device) | " + " | ".join(f"drop {pct(d)}" for d in DROPS) + " |"
    rule_line = "|---|" + "---|" * len(DROPS)

    def table(key: str) -> str:
        rows = [f"| {pct(cv)} | " + " | ".join(pct(det[cv, d][key]) for d in DROPS) + " |" for cv in CVS]
        return "\n".join([head, rule_line, *rows])

    false_rows = [f"| {pct(cv)} | {stable[cv]['active_per_100']:.2f} | {stable[cv]['outliers_per_100']:.2f} |"
                  for cv in CVS]
    worst_false = max(stable[cv]["active_per_100"] for cv in CVS)
    target_det = min(det[cv, 0.10]["within2"] for cv in CVS if cv <= 0.02)
    ok_false, ok_det = worst_false <= 1.0, target_det >= 0.95
    rule = ", ".join(f"{f.name}={getattr(RULE, f.name)}" for f in dataclasses.fields(RULE))
    body = f"""
Simulated decode-speed series (candidate {CANDIDATE} tok/s, baseline {BASELINE} tok/s) with log-normal noise on each
device, judged by `db.detect.evaluate_series` with the default speed rule:
`{rule}`.
Drop trials: {PRE} stable runs, then the candidate falls and stays down for {AFTER} runs; {args.trials} trials per
cell. Stable: {args.stable_series} series of {STABLE_RUNS} runs per noise level, counted from the first run (the
insufficient-data start included). Seed {SEED}.

Active within 2 runs of the drop (suspected on the first run, active on the second):

{table("within2")}

Active within 4 runs of the drop:

{table("within4")}

Of the drops that became active, the share whose alert said "candidate fell" (the rest named the baseline too,
or only; the noise is on both devices):

{table("said_candidate")}

Stable series, per 100 runs:

| noise CV (each device) | false active alerts | lone suspected runs (outliers) |
|---|---|---|
{chr(10).join(false_rows)}

Targets (issue 7):
- at most 1 false active alert per 100 stable runs at every noise level: worst {worst_false:.2f}, {"met" if ok_false else "MISSED"};
- a 10% drop at noise CV <= 2% active within 2 runs in at least 95% of trials: worst {pct(target_det)}, {"met" if ok_det else "MISSED"}.
  The ceiling is about 96.7%: the share of first runs that their own noise leaves beyond the 5% practical threshold.

At 3-5% noise per device the log ratio's noise (4-7%) is as large as a 5-10% drop: one run cannot tell them apart.
"""
    print(body)
    if not args.no_write:
        write_section("alert_quality", "Regression alert quality (bench/alert_quality.py)", body)
    return 0 if ok_false and ok_det else 1


if __name__ == "__main__":
    sys.exit(main())
