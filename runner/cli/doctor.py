"""`runner doctor`: the preflight for a host (and a job) before a run: device, stack, memory fit, collective, disk."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from core.errors import UserError
from runner.cli.common import out, user_errors

app = typer.Typer()


@app.command()
@user_errors
def doctor(
    device: Annotated[str, typer.Option("--device", "-d", help="Device class of this host: cpu, A100, H100, H20, "
                                                              "H200, 910B3, 910B4.")],
    model_path: Annotated[Optional[str], typer.Option(
        "--model-path", help="Local HF directory or .gguf file for the model, overriding model.path in the job "
                             "(only its config and tokenizer are read).")] = None,
    nnodes: Annotated[int, typer.Option("--nnodes", min=1, help="Hosts the job's ranks would span (each host "
                                                                "holds tensor_parallel / nnodes ranks).")] = 1,
    no_collective: Annotated[bool, typer.Option("--no-collective", help="Skip the all-reduce check.")] = False,
    job: Annotated[Optional[Path], typer.Option("--job", "-j", help="Job spec (TOML) to size: memory fit per "
                                                                    "tensor-parallel size, collective check.")] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="text or json.")] = "text",
):
    """Check this host before a run, loading no weights: the device and its count, the installed stack against the
    supported table (what is wrong and the fix), free memory per device, the job's memory fit at every
    tensor-parallel size (the smallest that fits is suggested), an all-reduce over the job's ranks with its process
    group, disk for the outbox and the model cache. Exit code 1 when a check fails.

    Example: runner doctor --device cpu --job jobs/codellama-34b-instruct.toml
    """
    import json

    from runner.preflight import doctor as report_of

    if fmt not in ("text", "json"):
        raise UserError(f"--format must be text or json, not {fmt!r}")
    report = report_of.run(device, job, model_path=model_path, nnodes=nnodes, collective=not no_collective)
    if fmt == "json":
        out.print(json.dumps(report.as_dict(), indent=1), markup=False, highlight=False)
    else:
        out.print(report_of.render(report), markup=False, highlight=False, end="")
    if not report.ok:
        raise typer.Exit(1)
