"""Benchmark sections name the commit they measured, and bench/status.py lists the stale ones: in a throw-away git
repository with two bench scripts, one declaring what it measures and one not."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench import status
from bench._report import write_section


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout.strip()


def _commit(root: Path, message: str) -> str:
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", message)
    return _git(root, "rev-parse", "--short=12", "HEAD")


@pytest.fixture
def repo(tmp_path) -> Path:
    _git(tmp_path, "init", "-q", "-b", "main")
    _git(tmp_path, "config", "user.email", "bench@example.com")
    _git(tmp_path, "config", "user.name", "bench")
    (tmp_path / "bench").mkdir()
    (tmp_path / "src").mkdir()
    (tmp_path / "bench" / "speed.py").write_text('MEASURES = ["src/fast.py"]\n')
    (tmp_path / "bench" / "quality.py").write_text("# measures whatever it imports\n")
    for name in ("fast.py", "other.py"):
        (tmp_path / "src" / name).write_text("x = 1\n")
    _commit(tmp_path, "start")
    return tmp_path


def _stale(repo: Path) -> dict[str, str]:
    return {line.split(" ", 1)[0]: line for line in status.stale(repo / "BENCHMARKS.md")}


def test_sections_go_stale_when_what_they_measure_changes(repo, capsys):
    md = repo / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n\n<!-- bench:speed_old -->\n## old\n\n_Measured 2026-01-01 00:00 UTC on vm._\n\n"
                  "| a |\n<!-- /bench:speed_old -->\n")
    head = _git(repo, "rev-parse", "--short=12", "HEAD")
    write_section("speed", "Speed", "| x |", md)
    write_section("speed_postgresql", "Speed on PostgreSQL", "| y |", md)  # also bench/speed.py's
    write_section("quality", "Quality", "| z |", md)
    assert f"at commit {head}._" in md.read_text()
    assert set(_stale(repo)) == {"speed_old"} and "names no commit" in _stale(repo)["speed_old"]

    (repo / "src" / "other.py").write_text("x = 2\n")  # not what speed measures
    _commit(repo, "other")
    assert set(_stale(repo)) == {"speed_old", "quality"}  # quality declares nothing: any change counts

    (repo / "src" / "fast.py").write_text("x = 3\n")
    _commit(repo, "fast")
    got = _stale(repo)
    assert set(got) == {"speed_old", "speed", "speed_postgresql", "quality"}
    assert got["speed"] == f"speed (bench/speed.py): measured at {head}; changed since: src/fast.py"

    assert status.main(md) == 0  # plain `make bench-status` informs, it does not fail
    assert len(capsys.readouterr().out.strip().splitlines()) == 4
    assert status.main(md, check=True) == 1
    cli = subprocess.run([sys.executable, "-m", "bench.status", str(md), "--check"], capture_output=True, text=True,
                         cwd=Path(status.__file__).parents[1])
    assert cli.returncode == 1 and len(cli.stdout.strip().splitlines()) == 4


def test_uncommitted_or_foreign_commits_are_stale_and_fresh_sections_current(repo, capsys):
    md = repo / "BENCHMARKS.md"
    (repo / "src" / "fast.py").write_text("x = 4\n")  # measured before committing
    write_section("speed", "Speed", "| x |", md)
    assert "with uncommitted changes to what it measures" in md.read_text()
    assert "uncommitted" in _stale(repo)["speed"]

    _commit(repo, "fast")
    write_section("speed", "Speed", "| x |", md)
    write_section("quality", "Quality", "| z |", md)
    assert status.main(md, check=True) == 0
    assert capsys.readouterr().out.startswith("all benchmark sections are current (2 sections)")

    md.write_text(md.read_text().replace(_git(repo, "rev-parse", "--short=12", "HEAD"), "0123456789ab"))
    assert "not an ancestor of HEAD" in _stale(repo)["speed"]
