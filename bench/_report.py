"""Writes one benchmark's section into BENCHMARKS.md, replacing that section's previous text.

Each benchmark owns the text between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`; other sections are kept.
"""
from __future__ import annotations

import datetime as _dt
import platform
import re
from pathlib import Path

BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
_HEADER = "# Benchmarks\n\nWritten by the scripts in `bench/`; each section is replaced when its script runs again.\n"


def write_section(name: str, title: str, body: str, path: Path = BENCHMARKS_MD) -> None:
    stamp = f"_Measured {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.node()} ({platform.machine()})._"
    block = f"<!-- bench:{name} -->\n## {title}\n\n{stamp}\n\n{body.strip()}\n<!-- /bench:{name} -->"
    text = path.read_text() if path.exists() else _HEADER
    pattern = re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->", re.S)
    text = pattern.sub(lambda _m: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)
