"""The CLI: help everywhere with an example, instant `--help`, one-line errors with exit codes, nothing written."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest
from typer.main import get_command
from typer.testing import CliRunner

from runner.cli import app

REPO = Path(__file__).resolve().parent.parent
runner = CliRunner()


def _commands(group: click.Group, prefix=()):
    for name, cmd in group.commands.items():
        yield prefix + (name,), cmd
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, prefix + (name,))


@pytest.mark.parametrize("path, cmd", list(_commands(get_command(app))), ids=lambda x: " ".join(x) if isinstance(x, tuple) else "")
def test_every_command_has_help_with_an_example(path, cmd):
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.output, f"`runner {' '.join(path)} --help` has no example"
    for param in cmd.params:
        if isinstance(param, click.Option) and param.name != "help":
            assert param.help, f"option {param.opts} of `runner {' '.join(path)}` has no help"


def test_help_is_instant_no_torch_import():
    code = ("import sys; from typer.testing import CliRunner; from runner.cli import app; "
            "r = CliRunner().invoke(app, ['submit', '--help']); assert r.exit_code == 0; "
            "print(sorted(m for m in ('torch', 'transformers', 'sqlalchemy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _store_is_empty(tmp_path) -> bool:
    return not (tmp_path / "store.db").exists()


@pytest.mark.parametrize("toml, fragment", [
    ('name = "x"\n[model]\nname = "tiny-random-llama"\ncolour = 1\n', "unknown key 'model.colour'"),
    ('name = "x"\n', "missing required key 'model'"),
    ('name = "x"\n[model]\nname = "tiny-random-llama"\n[perf]\nrepeats = "3"\n', "perf.repeats: expected int"),
    ('name = \n', "invalid TOML"),
])
def test_bad_job_file_one_line_exit_2_nothing_written(tmp_path, toml, fragment):
    job = tmp_path / "job.toml"
    job.write_text(toml)
    out = tmp_path / "run.json"
    result = runner.invoke(app, ["submit", "--device", "cpu", "--job", str(job), "--out", str(out)])
    assert result.exit_code == 2
    assert fragment in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not out.exists() and _store_is_empty(tmp_path)


@pytest.mark.parametrize("args, fragment, code", [
    (["submit", "--device", "TPUv9", "--job", "jobs/smoke.toml"], "unknown device 'TPUv9'", 2),
    (["submit", "--device", "cpu", "--job", "jobs/nope.toml"], "job file not found", 2),
    (["submit", "--device", "cpu", "--job", "jobs/smoke.toml", "--format", "xml"], "--format", 2),
    (["push", "jobs/smoke.toml"], "not JSON", 2),
    (["push", "missing.json"], "run document not found", 2),
    (["compare", "--candidate", "A100", "--baseline", "A100", "--fingerprint", "x"], "both A100", 2),
    (["compare", "--job", "jobs/smoke.toml", "--fingerprint", "x"], "not both", 2),
    (["compare"], "no job has runs on both 910B3 and A100", 2),
    (["runs", "--db", "postgresql://nobody@127.0.0.1:1/none"], "127.0.0.1", 3),
    (["runs", "--db", "nonsense"], "not a database URL", 3),
])
def test_bad_input_one_line_errors(monkeypatch, args, fragment, code):
    monkeypatch.chdir(REPO)
    result = runner.invoke(app, args)
    assert result.exit_code == code, result.output
    assert fragment in result.output
    assert "Traceback" not in result.output


def test_npu_and_gpu_declared_without_hardware_say_what_was_found(monkeypatch):
    import torch

    monkeypatch.chdir(REPO)
    if not torch.cuda.is_available():
        result = runner.invoke(app, ["submit", "--device", "A100", "--job", "jobs/smoke.toml"])
        assert result.exit_code == 2 and "no CUDA device is visible; found: cpu (" in result.output
    result = runner.invoke(app, ["submit", "--device", "910B3", "--job", "jobs/smoke.toml"])
    assert result.exit_code == 2 and "no Ascend NPU is usable" in result.output


def test_push_twice_is_a_noop_and_compare_reads_it(monkeypatch):
    monkeypatch.chdir(REPO)
    docs = ["examples/reference-910B3.json", "examples/reference-A100.json"]
    first = runner.invoke(app, ["push", *docs])
    assert first.exit_code == 0 and first.output.count("pushed:") == 2
    second = runner.invoke(app, ["push", *docs])
    assert second.exit_code == 0 and second.output.count("already in store") == 2
    result = runner.invoke(app, ["compare", "--job", "jobs/codellama-34b-instruct.toml"])
    assert result.exit_code == 0 and "| ratio | 1 | 0.0683 | 0.5397 |" in result.output
    runs = runner.invoke(app, ["runs"])
    assert runs.exit_code == 0 and runs.output.count("imported") == 2


def test_db_upgrade_and_current(tmp_path):
    from db.engine import head_revision

    url, head = f"sqlite:///{tmp_path / 'new.db'}", head_revision()
    assert "none (empty)" in runner.invoke(app, ["db", "current", "--db", url]).output
    up = runner.invoke(app, ["db", "upgrade", "--db", url])
    assert up.exit_code == 0 and f"empty -> {head}" in up.output
    assert f"revision {head}, code expects {head}" in runner.invoke(app, ["db", "current", "--db", url]).output
