"""Which BENCHMARKS.md sections no longer describe the code: one line per stale section, or a line saying all are
current.

A section is stale when it names no commit, when its commit is not an ancestor of HEAD, when it was measured with
uncommitted changes to what its script measures, or when any of those paths changed in a commit after it. What a
script measures is its module-level MEASURES list plus the script itself (bench/_report.py); a script without one
is taken to measure the whole repository.

Run: make bench-status   (or: python3 -m bench.status). It exits 0 either way; with --check it exits 1 when a
section is stale, for a CI step that must fail then: python3 -m bench.status --check
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from bench._report import BENCHMARKS_MD, STAMP, git, pathspec, script_of

SECTION = re.compile(r"<!-- bench:([\w.-]+) -->(.*?)<!-- /bench:\1 -->", re.S)


def why_stale(name: str, text: str, root: Path) -> str | None:
    script = script_of(name, root)
    if script is None:
        return "no script in bench/ writes it"
    stamp = STAMP.search(text)
    if stamp is None:
        return "names no commit"
    commit, uncommitted = stamp.groups()
    if uncommitted:
        return f"measured at {commit} with uncommitted changes to what it measures"
    if git(root, "merge-base", "--is-ancestor", commit, "HEAD").returncode != 0:
        return f"measured at {commit}, which is not an ancestor of HEAD"
    changed = git(root, "diff", "--name-only", commit, "HEAD", "--", *pathspec(script, root)).stdout.split()
    if changed:
        shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
        return f"measured at {commit}; changed since: {shown}"
    return None


def stale(path: Path = BENCHMARKS_MD) -> list[str]:
    """`name (script): why` for each stale section, in file order."""
    root, lines = path.parent, []
    for name, text in SECTION.findall(path.read_text() if path.exists() else ""):
        why = why_stale(name, text, root)
        if why is not None:
            script = script_of(name, root)
            lines.append(f"{name} ({script.relative_to(root) if script else 'no script'}): {why}")
    return lines


def main(path: Path = BENCHMARKS_MD, check: bool = False) -> int:
    """Print the stale sections; the exit status is 1 when `check` and any is stale, else 0."""
    lines = stale(path)
    total = len(SECTION.findall(path.read_text())) if path.exists() else 0
    print("\n".join(lines) if lines else f"all benchmark sections are current ({total} sections)")
    return 1 if check and lines else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="List the BENCHMARKS.md sections that no longer describe the code.",
                                     epilog="Example: python3 -m bench.status --check")
    parser.add_argument("path", nargs="?", type=Path, default=BENCHMARKS_MD, help="default: BENCHMARKS.md")
    parser.add_argument("--check", action="store_true", help="exit 1 when any section is stale (default: exit 0)")
    args = parser.parse_args()
    raise SystemExit(main(args.path, args.check))
