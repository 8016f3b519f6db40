"""`runner serve`: start the job's engine on this host, measure the job through it as `runner submit --endpoint`
does, and stop the engine, whatever happened."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from core.errors import UserError
from core.rules import DEFAULT_BASELINE, DEFAULT_CANDIDATE
from runner.cli import runs
from runner.cli.common import DbOpt, FormatOpt, check_format, err, user_errors

app = typer.Typer()


@app.command()
@user_errors
def serve(
    job: Annotated[Path, typer.Option("--job", "-j", help="Serving job spec (TOML). Example: jobs/serving-demo.toml")],
    device: Annotated[str, typer.Option("--device", "-d", help="Device class of this host (as for runner submit).")],
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port the engine listens on (0: a free one).")] = 0,
    host: Annotated[str, typer.Option(help="Address of this host the engine listens on. Example: --host 0.0.0.0")
                    ] = "127.0.0.1",
    startup_timeout: Annotated[float, typer.Option(
        "--startup-timeout", help="Seconds to wait for the engine to answer (loading a large model takes minutes).")
    ] = 1800.0,
    out_file: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help="Write the run document to this JSON file instead of pushing it.")] = None,
    model_path: Annotated[Optional[str], typer.Option(
        "--model-path", help="Local HF directory for the model, overriding model.path in the job.")] = None,
    candidate: Annotated[str, typer.Option(help="Candidate side of the printed tables.")] = DEFAULT_CANDIDATE,
    baseline: Annotated[str, typer.Option(help="Baseline side of the printed tables.")] = DEFAULT_BASELINE,
    db: DbOpt = None,
    fmt: FormatOpt = "markdown",
):
    """Start the job's engine (`vllm serve` with the job's TP size and dtype, `transformers serve`, or the job's own
    serving.engine.command), wait until it answers, run the serving job against it, stop it. The engine inherits this
    environment: where the client shares its cores, cap its threads (OMP_NUM_THREADS=1).

    Example: runner serve --device cpu --job jobs/serving-demo.toml

    Example: OMP_NUM_THREADS=1 runner serve --device cpu --job jobs/serving-demo.toml --format json
    """
    from runner import devices, models
    from runner.serving import engine
    from runner.spec import load_spec

    check_format(fmt)  # every check before the engine starts: loading a large model takes minutes
    spec = load_spec(job)
    if spec.serving is None:
        raise UserError(f"job {spec.name!r} has no [serving] section: runner serve runs serving jobs "
                        "(example: jobs/serving-demo.toml)")
    device_type = devices.DEVICE_CLASSES[devices.known(device)][0]
    free = engine.free_port(host)  # also when --port is given: --host must be an address of this host
    port = port or free
    url = engine.url(host, port)
    argv = engine.command(spec, models.resolve(spec.model, model_path), host, port, device_type)
    err.print(f"starting {spec.serving.engine.name}: {' '.join(argv)}", highlight=False, markup=False)
    with engine.running(argv, url, startup_timeout):
        runs.submit(job=job, device=device, out_file=out_file, model_path=model_path, candidate=candidate,
                    baseline=baseline, endpoint=url, db=db, fmt=fmt)
    err.print(f"stopped {spec.serving.engine.name}", highlight=False)
