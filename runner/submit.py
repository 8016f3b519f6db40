"""`runner submit`: run one job on this host's device and produce its run document.

Order matters for trust and for "nothing lost": the job file, the device and the store are all checked before any
model is loaded, so a typo fails in a second rather than after an hour; the document is validated before it is
written or pushed, and the push is one transaction.
"""
from __future__ import annotations

import contextlib
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from runner import devices, environment, humaneval, models, perf, rundoc
from runner.spec import JobSpec


@contextlib.contextmanager
def progress_bars(console: Console):
    """Rich progress on stderr; yields `bar(description, total) -> step(n=1)`."""
    with Progress(SpinnerColumn(), TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=False) as progress:
        def bar(description: str, total: int | None):
            task = progress.add_task(description, total=total)

            def step(n: int = 1):
                progress.advance(task, n)
            return step
        yield bar


def _quiet_transformers() -> None:
    from transformers.utils import logging

    logging.disable_progress_bar()  # our own bars say what is happening
    logging.set_verbosity_error()


def run_job(spec: JobSpec, device: devices.Device, *, model_path: str | None = None,
            console: Console | None = None) -> dict:
    """Load the model, time it, run HumanEval; returns a validated run document (not yet written or pushed)."""
    import torch

    console = console or Console(stderr=True)
    _quiet_transformers()
    torch.manual_seed(spec.seed)
    started = rundoc.now()
    with progress_bars(console) as bar:
        step = bar(f"loading {spec.model.name}", 1)
        t0 = time.perf_counter()
        model_dir = models.resolve(spec.model, model_path)
        model, tok = models.load(model_dir, device.torch_device(), spec.model.dtype)
        step()
        load_s = time.perf_counter() - t0
        records = []
        for bs in spec.perf.batch_sizes:
            p = spec.perf
            step = bar(f"timing batch size {bs}", p.warmup + p.repeats)
            records.append(perf.measure(model, device.type, device.torch_device(), batch_size=bs,
                                        prompt_tokens=p.prompt_tokens, new_tokens=p.new_tokens, warmup=p.warmup,
                                        repeats=p.repeats, seed=spec.seed, step=step))
        he = None
        if spec.humaneval is not None:
            he = humaneval.run(model, tok, spec.humaneval, device.torch_device(), spec.seed,
                               progress=lambda phase, total: bar(f"HumanEval {phase}", total))
    doc = rundoc.new_document(
        device={"class": device.device_class, "type": device.type, "name": device.name,
                "count": spec.model.tensor_parallel},
        environment=environment.capture(device), job_name=spec.name, fingerprint=spec.fingerprint,
        spec=spec.to_dict(), started_at=started)
    doc["environment"]["model_dir"] = str(model_dir)
    doc["environment"]["model_load_s"] = round(load_s, 3)
    doc["perf"], doc["humaneval"], doc["finished_at"] = records, he, rundoc.now()
    return rundoc.validate(doc)
