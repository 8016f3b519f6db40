"""Writes one benchmark's section into BENCHMARKS.md, replacing that section's previous text, stamped with the
commit it measured.

Each benchmark owns the text between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`; other sections are kept. A
section's NAME starts with its script's module name (`dashboard_speed_postgresql` comes from
bench/dashboard_speed.py), and the script may declare the paths it measures in a module-level `MEASURES` list. The
stamp names HEAD and says when those paths had uncommitted changes, so bench/status.py can tell a stale section.
"""
from __future__ import annotations

import ast
import datetime as _dt
import platform
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCHMARKS_MD = REPO / "BENCHMARKS.md"
_HEADER = "# Benchmarks\n\nWritten by the scripts in `bench/`; each section is replaced when its script runs again.\n"
NOT_BENCHES = ("_report", "status", "__init__")
UNCOMMITTED = "with uncommitted changes to what it measures"
STAMP = re.compile(r"^_Measured [^\n]* at commit ([0-9a-f]{7,40})(, " + UNCOMMITTED + r")?\._$", re.M)
EVERYTHING = [".", ":(exclude)BENCHMARKS.md"]  # what a script without MEASURES is taken to measure


def git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)


def script_of(section: str, root: Path) -> Path | None:
    """The bench script that writes a section: the longest module name the section's name starts with."""
    scripts = [p for p in (root / "bench").glob("*.py") if p.stem not in NOT_BENCHES and section.startswith(p.stem)]
    return max(scripts, key=lambda p: len(p.stem), default=None)


def measures(script: Path) -> list[str] | None:
    """The script's module-level MEASURES (paths relative to the repository), None when it declares none. Read
    from the source, so listing it runs none of the script's imports."""
    for node in ast.parse(script.read_text()).body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) \
            else []
        if any(isinstance(t, ast.Name) and t.id == "MEASURES" for t in targets) and node.value is not None:
            return list(ast.literal_eval(node.value))
    return None


def pathspec(script: Path | None, root: Path) -> list[str]:
    """What a section's script measures, as git pathspecs: its MEASURES and itself, or everything."""
    declared = measures(script) if script is not None else None
    return EVERYTHING if declared is None else [*declared, str(script.relative_to(root))]


def commit_stamp(name: str, root: Path) -> str:
    """"at commit <HEAD>", and whether what the section's script measures differs from HEAD in the working tree."""
    head = git(root, "rev-parse", "--short=12", "HEAD").stdout.strip()
    if not head:
        return "outside a git checkout (no commit)"
    changed = git(root, "status", "--porcelain", "--", *pathspec(script_of(name, root), root)).stdout.strip()
    return f"at commit {head}" + (f", {UNCOMMITTED}" if changed else "")


def write_section(name: str, title: str, body: str, path: Path = BENCHMARKS_MD,
                  measured_at: str | None = None) -> None:
    """Replace section `name`; `measured_at`: commit_stamp() taken when a long benchmark started (default: now)."""
    stamp = (f"_Measured {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.node()} "
             f"({platform.machine()}) {measured_at or commit_stamp(name, path.parent)}._")
    block = f"<!-- bench:{name} -->\n## {title}\n\n{stamp}\n\n{body.strip()}\n<!-- /bench:{name} -->"
    text = path.read_text() if path.exists() else _HEADER
    pattern = re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->", re.S)
    text = pattern.sub(lambda _m: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)
