"""The `runner` command line: submit runs, push run documents, print comparison tables, manage the store.

Heavy imports (torch, transformers, SQLAlchemy models) happen inside the commands, so `runner --help` is instant.
User errors print one line to stderr and exit non-zero (2 for bad input, 3 for an unusable store); no traceback.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from runner.errors import UserError

app = typer.Typer(
    help="Cross-device LLM comparison: run a job on this host's device, push the results to the SQL store, "
         "print 910B3-vs-A100 style comparison tables.\n\n"
         "Example: runner submit --device cpu --job jobs/demo-cpu.toml",
    no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]})
db_app = typer.Typer(help="Manage the store's schema.\n\nExample: runner db upgrade --db sqlite:///runs.db",
                     no_args_is_help=True)
app.add_typer(db_app, name="db")

err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

DbOpt = Annotated[Optional[str], typer.Option(
    "--db", metavar="URL", help="SQLAlchemy URL of the store (default: $DEVCOMPARE_DB_URL, else a SQLite file in "
                                "the user data dir). Example: --db postgresql://runner@db-host/devcompare")]
FormatOpt = Annotated[str, typer.Option("--format", "-f", help="Table format: markdown, csv or json.")]


def user_errors(fn):
    """Turn UserError into one red line on stderr and its exit code."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            err.print(f"[red]error:[/red] {escape(str(e))}", highlight=False, markup=True)
            raise typer.Exit(e.exit_code) from None
    return wrapper


def _check_format(fmt: str) -> None:
    if fmt not in ("markdown", "csv", "json"):
        raise UserError(f"--format must be markdown, csv or json, not {fmt!r}")


def _print_comparison(engine, fingerprint: str | None, candidate: str, baseline: str, fmt: str) -> None:
    from db import compare
    from db.engine import session_scope

    with session_scope(engine) as session:
        text = compare.render(compare.build(session, fingerprint, candidate, baseline), fmt)
    out.print(text, markup=False, highlight=False, end="")


@app.command()
@user_errors
def submit(
    job: Annotated[Path, typer.Option("--job", "-j", help="Job spec (TOML). Example: jobs/demo-cpu.toml")],
    device: Annotated[str, typer.Option("--device", "-d", help="Device class of this host: cpu, A100, H100, 910B3, "
                                                              "910B4. Checked against the detected hardware.")],
    out_file: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help="Write the run document to this JSON file instead of pushing it (push later with "
                            "`runner push FILE`).")] = None,
    model_path: Annotated[Optional[str], typer.Option(
        "--model-path", help="Local HF directory or .gguf file for the model, overriding model.path in the job.")] = None,
    candidate: Annotated[str, typer.Option(help="Candidate side of the printed tables (this host's device takes "
                                                "its place unless it is the baseline).")] = "910B3",
    baseline: Annotated[str, typer.Option(help="Baseline side of the printed tables.")] = "A100",
    db: DbOpt = None,
    fmt: FormatOpt = "markdown",
):
    """Run a job on this host's device (perf timing + HumanEval), push the results, print the comparison tables.

    Example: runner submit --device cpu --job jobs/demo-cpu.toml
    """
    from runner import devices, rundoc
    from runner.spec import load_spec

    _check_format(fmt)
    spec = load_spec(job)
    dev = devices.detect(device)
    engine = None
    if out_file is None:
        from db.engine import open_store

        engine = open_store(db)  # fail before the model loads, not after an hour of work
    from runner.submit import submit_job

    doc = submit_job(spec, dev, model_path=model_path, console=err)
    if out_file is not None:
        rundoc.write(doc, out_file)
        err.print(f"wrote run {doc['run_id']} to {out_file} (push it with: runner push {out_file})", highlight=False)
        return
    from db import store

    store.push(engine, doc)
    err.print(f"pushed run {doc['run_id']} ({dev.device_class}, job {spec.name}, fingerprint {spec.fingerprint})",
              highlight=False)
    if dev.device_class != baseline:
        candidate = dev.device_class
    _print_comparison(engine, spec.fingerprint, candidate, baseline, fmt)


@app.command()
@user_errors
def push(
    files: Annotated[list[Path], typer.Argument(help="Run documents written by `runner submit --out`.",
                                                show_default=False)],
    db: DbOpt = None,
):
    """Push run documents into the store; a run that is already there is skipped (pushing twice is a no-op).

    Example: runner push run-910B3.json run-A100.json
    """
    from db import store
    from db.engine import open_store
    from runner import rundoc

    docs = [rundoc.read(f) for f in files]  # validate all before writing any
    engine = open_store(db)
    for f, doc in zip(files, docs):
        added = store.push(engine, doc)
        err.print(f"{'pushed' if added else 'already in store'}: {f} (run {doc['run_id']}, {doc['device']['class']})",
                  highlight=False)


@app.command()
@user_errors
def compare(
    candidate: Annotated[str, typer.Option(help="Device class whose numbers are the numerator.")] = "910B3",
    baseline: Annotated[str, typer.Option(help="Device class whose numbers are the denominator.")] = "A100",
    job: Annotated[Optional[Path], typer.Option("--job", "-j", help="Compare runs of this job spec.")] = None,
    fingerprint: Annotated[Optional[str], typer.Option(help="Compare runs with this job fingerprint.")] = None,
    db: DbOpt = None,
    fmt: FormatOpt = "markdown",
):
    """Print the comparison tables (accuracy; speed per batch size) from the latest run of each device.

    Without --job or --fingerprint, the most recent job that has runs on both devices is used.

    Example: runner compare --candidate 910B3 --baseline A100 --job jobs/codellama-34b-instruct.toml --format csv
    """
    from db.engine import open_store
    from runner.spec import load_spec

    _check_format(fmt)
    if job is not None and fingerprint is not None:
        raise UserError("give --job or --fingerprint, not both")
    fp = load_spec(job).fingerprint if job is not None else fingerprint
    _print_comparison(open_store(db), fp, candidate, baseline, fmt)


@app.command()
@user_errors
def runs(
    db: DbOpt = None,
    limit: Annotated[int, typer.Option(help="Show at most this many runs, newest first.")] = 20,
):
    """List the newest runs in the store (id, time, device, job, fingerprint, source).

    Example: runner runs --limit 5
    """
    from rich.table import Table
    from sqlalchemy import select

    from db.engine import open_store, session_scope
    from db.models import Run

    with session_scope(open_store(db)) as session:
        rows = session.scalars(select(Run).order_by(Run.finished_at.desc()).limit(limit)).all()
        table = Table("run", "finished (UTC)", "device", "job", "fingerprint", "source")
        for column in table.columns:
            column.no_wrap = True
        for r in rows:
            table.add_row(r.id, f"{r.finished_at:%Y-%m-%d %H:%M}", r.device_class, r.job_name, r.fingerprint, r.source)
    if not rows:
        err.print("the store has no runs yet: runner submit --device cpu --job jobs/demo-cpu.toml")
        return
    Console(width=max(out.width, 150)).print(table)  # ids and fingerprints are copied: never truncate them


@app.command()
@user_errors
def fingerprint(job: Annotated[Path, typer.Argument(help="Job spec (TOML).", show_default=False)]):
    """Validate a job spec and print its fingerprint (runs are compared only within one fingerprint).

    Example: runner fingerprint jobs/codellama-34b-instruct.toml
    """
    from runner.spec import load_spec

    out.print(load_spec(job).fingerprint, highlight=False)


@db_app.command("upgrade")
@user_errors
def db_upgrade(db: DbOpt = None):
    """Create the store's tables or bring them to this code's schema revision (Alembic).

    Example: runner db upgrade --db postgresql://runner@db-host/devcompare
    """
    from db.engine import display_url, make_engine, resolve_url, upgrade

    before, after = upgrade(make_engine(db))
    err.print(f"{display_url(resolve_url(db))}: schema {before or 'empty'} -> {after}", highlight=False)


@db_app.command("current")
@user_errors
def db_current(db: DbOpt = None):
    """Print the store's schema revision and the one this code expects.

    Example: runner db current
    """
    from db.engine import current_revision, display_url, head_revision, make_engine, resolve_url

    cur = current_revision(make_engine(db))
    out.print(f"{display_url(resolve_url(db))}: revision {cur or 'none (empty)'}, code expects {head_revision()}",
              highlight=False)


if __name__ == "__main__":
    app()
