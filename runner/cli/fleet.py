"""Fleet mode: `runner enqueue` fills the job queue, `runner agent` works it, `runner jobs` lists and cancels jobs."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from core.errors import UserError
from runner.cli.common import DbOpt, err, out, print_wide, user_errors
from runner.cli.nodes import MasterAddrOpt, MasterPortOpt

app = typer.Typer()
jobs_app = typer.Typer(help="The fleet job queue: list jobs (default), cancel one.\n\n"
                            "Example: runner jobs --state queued --format json")


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


def parse_endpoints(values: list[str] | None) -> dict[str | None, str]:
    """`--endpoint` values: "URL" for every serving job, "JOB=URL" for the job named JOB. Keyed by job name, None for
    the default."""
    from runner.serving.client import base_url

    endpoints: dict[str | None, str] = {}
    for value in values or []:
        job, sep, url = value.partition("=")
        if not sep or "://" in job:  # a plain URL (whose query string may hold "=")
            job, url = None, value
        if job is not None and not job.strip():
            raise UserError(f"--endpoint {value!r}: the job name before '=' is empty (example: serving-demo=URL)")
        key = job.strip() if job is not None else None
        if key in endpoints:
            raise UserError(f"--endpoint given twice for {'job ' + repr(key) if key else 'every serving job'}")
        base_url(url)  # a malformed URL in the agent's own settings fails here, before any claim
        endpoints[key] = url.strip()
    return endpoints



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
    nnodes: Annotated[int, typer.Option("--nnodes", min=1, help="Hosts in this agent's group: node 0 claims jobs "
                                                                "and runs those of nnodes x --nproc-per-node ranks "
                                                                "across the group.")] = 1,
    node_rank: Annotated[int, typer.Option("--node-rank", min=0, help="This host's place in the group (0 claims "
                                                                     "jobs; the others follow it).")] = 0,
    master_addr: MasterAddrOpt = None,
    master_port: MasterPortOpt = 29500,
    nproc_per_node: Annotated[Optional[int], typer.Option(
        "--nproc-per-node", min=1, help="Ranks per host in a job across the group (default: this host's "
                                        "devices); the same on every node.")] = None,
    endpoint: Annotated[Optional[list[str]], typer.Option(
        "--endpoint", metavar="[JOB=]URL", help="OpenAI-compatible URL of the engine serving this host's model: "
                                                "serving jobs ([serving] section) are measured through it, as "
                                                "`runner submit --endpoint` does. JOB=URL: only for the job named "
                                                "JOB (repeatable; a plain URL serves every other job).")] = None,
    db: DbOpt = None,
):
    """Run queued jobs for this host's device class, each exactly as `runner submit` would, until stopped.

    A job that cannot fit in this host's device memory is refused before any rank starts (its attempt fails with
    the sizes that would fit). With --nnodes N, node 0 claims jobs and runs those of N x --nproc-per-node ranks
    across the group; nodes 1..N-1 claim nothing and lend their ranks to node 0's jobs.

    Finished runs go through a local outbox ($DEVCOMPARE_OUTBOX), so a store outage loses nothing; SIGTERM or
    Ctrl-C hands the current job back to the queue. Exit code 3: runs are left in the outbox.

    A serving job is measured through --endpoint (the engine runs already, e.g. `vllm serve MODEL --port 8000`);
    one this agent has no endpoint for fails its attempt with that reason, and the agent goes on.

    Example: runner agent --device 910B3 --db postgresql://runner@db-host/devcompare

    Example: runner agent --device A100 --endpoint http://127.0.0.1:8000 --endpoint serving-demo=http://127.0.0.1:8001
    """
    from db.engine import make_engine
    from runner import devices
    from runner.fleet.agent import Agent
    from runner.tp.launch import Nodes

    endpoints = parse_endpoints(endpoint)  # a typo fails before the device probe and any claim
    nodes = Nodes(nnodes, node_rank, master_addr, master_port)
    dev = devices.detect(device)
    agent = Agent(make_engine(db), dev, name=name, model_path=model_path, poll_s=poll_interval,
                  heartbeat_s=heartbeat, stale_after_s=stale_after, once=once, console=err, nodes=nodes,
                  nproc_per_node=nproc_per_node, endpoints=endpoints)
    raise typer.Exit(agent.follow() if nodes.rank > 0 else agent.serve())


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
    print_wide(table, 150)  # run ids are copied: never truncate them


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


