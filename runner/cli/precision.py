"""`runner precision compare`: the per-layer precision of any two runs of one model on the same prompts, whatever
their device, dtype or tensor-parallel size (a fp32 reference against bf16, TP 1 against TP 2, 910B3 against A100)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from core.errors import UserError
from runner.cli.common import DbOpt, out, user_errors

app = typer.Typer(help="Per-layer precision of two runs.\n\nExample: runner precision compare RUN_A RUN_B",
                  no_args_is_help=True)
RunArg = "a run id (or its first characters) in the store, or a run document file (runner submit --out)"


def _label(device: str, dtype: str, tp: int) -> str:
    return f"{device} {dtype} TP{tp}"


def _from_file(path: Path) -> tuple[str, dict | None]:
    from core import rundoc

    doc = rundoc.read(path)
    model = doc["job"]["spec"]["model"]
    return _label(doc["device"]["class"], model["dtype"], model["tensor_parallel"]), doc.get("precision")


def _from_store(session, ref: str) -> tuple[str, dict | None]:
    from sqlalchemy import select

    from db.models import PrecisionRecord, Run

    ids = session.scalars(select(Run.id).where(Run.id.startswith(ref, autoescape=True)).limit(2)).all()
    if len(ids) != 1:
        raise UserError(f"{ref}: {'no run' if not ids else 'more than one run'} in the store "
                        f"{'has that id' if not ids else 'starts with it; give more of the id'} "
                        "(see `runner runs`), and no such run document file")
    run, record = session.get(Run, ids[0]), session.get(PrecisionRecord, ids[0])
    return _label(run.device_class, run.dtype, run.tensor_parallel), record.data if record else None


@app.command("compare")
@user_errors
def compare(
    run_a: Annotated[str, typer.Argument(metavar="RUN_A", help=f"Candidate: {RunArg}.")],
    run_b: Annotated[str, typer.Argument(metavar="RUN_B", help=f"Baseline (the reference): {RunArg}.")],
    threshold: Annotated[float, typer.Option(help="Relative error that counts as divergent: the report names the "
                                                  "first layer at or over it.")] = 1e-2,
    fmt: Annotated[str, typer.Option("--format", "-f", help="markdown or json.")] = "markdown",
    db: DbOpt = None,
):
    """Per layer, the estimated relative error ||A - B|| / ||B|| and cosine similarity of the two runs' outputs,
    the first layer over the threshold, and the logits' top-1 agreement and KL divergence.

    Example: runner precision compare run-fp32.json run-bf16.json --threshold 1e-3
    """
    from core import precision
    from db import tables

    if fmt not in ("markdown", "json"):
        raise UserError(f"--format must be markdown or json, not {fmt!r}")
    if threshold <= 0:
        raise UserError(f"--threshold must be > 0, not {threshold}")
    sides = [_from_file(Path(ref)) if Path(ref).is_file() else None for ref in (run_a, run_b)]
    if None in sides:
        from db.engine import open_store, session_scope

        with session_scope(open_store(db)) as session:
            sides = [side or _from_store(session, ref) for side, ref in zip(sides, (run_a, run_b))]
    (label_a, a), (label_b, b) = sides
    if label_a == label_b:  # e.g. a rerun, or a perturbed copy: name them by their references instead
        label_a, label_b = run_a, run_b
    for ref, section in ((run_a, a), (run_b, b)):
        if section is None:
            raise UserError(f"{ref}: the run has no precision section (its job had no [precision], or it was "
                            "measured through a serving endpoint)")
    result = precision.compare(a, b, threshold)
    if fmt == "json":
        out.print(json.dumps({"candidate": label_a, "baseline": label_b, **result}, indent=2), markup=False,
                  highlight=False, soft_wrap=True)
    else:
        out.print(tables.precision_text(result, label_a, label_b).lstrip("\n"), markup=False, highlight=False,
                  end="")
