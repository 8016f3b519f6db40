"""`runner report`: the competitor-comparison section of a ModelZoo README, from the store."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from core.rules import DEFAULT_BASELINE, DEFAULT_CANDIDATE
from runner.cli.common import DbOpt, err, out, user_errors

app = typer.Typer()


@app.command()
@user_errors
def report(
    job: Annotated[Path, typer.Option("--job", "-j", help="Job spec (TOML) whose runs are reported.")],
    candidate: Annotated[str, typer.Option(help="Device class whose numbers are the numerator.")] = DEFAULT_CANDIDATE,
    baseline: Annotated[str, typer.Option(help="Device class whose numbers are the denominator.")] = DEFAULT_BASELINE,
    lang: Annotated[str, typer.Option("--lang", help="en, or zh (the ModelZoo guides' wording: 首token推理速度, "
                                                     "增量推理速度).")] = "en",
    fmt: Annotated[str, typer.Option("--format", "-f", help="markdown (to paste into a README), or html (one "
                                                            "self-contained file with charts).")] = "markdown",
    out_file: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write to this file instead of "
                                                                         "standard output.")] = None,
    db: DbOpt = None,
):
    """Print the README section "competitor comparison": the accuracy table, the performance table with its ratio
    row, and a footnote with the run ids, dates, environment and significance, from the latest run of each device.

    Example: runner report --job jobs/codellama-34b-instruct.toml --lang zh --format html --out report.html
    """
    from db import report as readme
    from db.engine import open_store, session_scope
    from runner.spec import load_spec

    readme.check(lang, fmt)
    fingerprint = load_spec(job).fingerprint
    with session_scope(open_store(db)) as session:
        text = readme.render(readme.build(session, fingerprint, candidate, baseline), lang, fmt)
    if out_file is None:
        out.print(text, markup=False, highlight=False, end="", soft_wrap=True)
        return
    out_file.write_text(text, encoding="utf-8")
    err.print(f"wrote {out_file} ({fmt}, {lang})", highlight=False)
