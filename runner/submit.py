"""`runner submit`: run one job on this host's device and produce its run document.

Order matters for trust and for "nothing lost": the job file, the device, the tensor-parallel size and the store are
all checked before any rank starts, so a typo fails in a second rather than after an hour; the document is validated
before it is written or pushed, and the push is one transaction.

With `tensor_parallel = N > 1` the same `run_job` runs on N ranks under torchrun (runner.tp.launch / runner.tp.rank):
every rank makes the same model calls, rank 0 keeps the records and executes the HumanEval samples. A job that
cannot fit in device memory at its size is refused before any rank starts, with the sizes that would fit
(runner.preflight.fit).
"""
from __future__ import annotations

import contextlib
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from core import rundoc
from runner import devices, environment, models, perf, power, precision, roofline
from runner.humaneval import generation as humaneval
from runner.spec import JobSpec

PROBE_TASKS = ("HumanEval/0", "HumanEval/1", "HumanEval/2", "HumanEval/3")  # fixed prompts for token agreement
PROBE_TOKENS = 64


@contextlib.contextmanager
def progress_bars(console: Console, enabled: bool = True):
    """Rich progress on stderr; yields `bar(description, total) -> step(n=1)`. Disabled on ranks > 0."""
    if not enabled:
        yield lambda description, total: (lambda n=1: None)
        return
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


def token_probe(model, tokenizer, torch_device: str, device_type: str) -> dict:
    """Greedy ids of the first PROBE_TOKENS new tokens of fixed HumanEval prompts, EOS ignored: comparing two
    devices' ids answers the reference report's precision question at the output level."""
    problems = humaneval.all_problems()
    tokens = []
    for task in PROBE_TASKS:
        ids = tokenizer(problems[task]["prompt"], return_tensors="pt")["input_ids"].to(torch_device)  # [1, T]
        _ttft, _e2e, new = perf.timed_call(model, ids, PROBE_TOKENS, device_type)
        tokens.append(new[0].tolist())
    return {"tasks": list(PROBE_TASKS), "tokens": tokens}


def run_job(spec: JobSpec, device: devices.Device, *, model_path: str | None = None, console: Console | None = None,
            rank: int = 0, world: int = 1, local_rank: int = 0) -> dict | None:
    """Load the model, time it, run HumanEval; rank 0 returns a validated run document, other ranks None."""
    import torch

    lead = rank == 0
    console = console or Console(stderr=True)
    _quiet_transformers()
    torch.manual_seed(spec.seed)
    torch_device = device.torch_device(local_rank)
    started = rundoc.now()
    with progress_bars(console, enabled=lead) as bar:
        step = bar(f"loading {spec.model.name}", 1)
        t0 = time.perf_counter()
        model_dir = models.resolve(spec.model, model_path)
        model, tok = models.load(model_dir, torch_device, spec.model.dtype, world=world)
        step()
        load_s = time.perf_counter() - t0
        peak_gbps, peak_source = roofline.peak_bandwidth_gbps(device.type, device.name)
        meter = power.meter_for(device.type, local_rank)
        records, energy = [], []
        for bs in spec.perf.batch_sizes:
            p = spec.perf
            step = bar(f"timing batch size {bs}", p.warmup + p.repeats)
            rec = perf.measure(model, device.type, torch_device, batch_size=bs, prompt_tokens=p.prompt_tokens,
                               new_tokens=p.new_tokens, warmup=p.warmup, repeats=p.repeats, seed=spec.seed, step=step,
                               meter=meter)
            per_step = roofline.decode_bytes_per_step(model, bs, p.prompt_tokens, p.new_tokens, world)
            rec["bandwidth_gbps"], rec["bandwidth_util"] = roofline.achieved(
                per_step, rec["decode_tokens_per_s"]["median"], bs, peak_gbps)
            energy.append(rec.pop("energy"))
            records.append(rec)
        step = bar("token probe", 1)
        probe = token_probe(model, tok, torch_device, device.type)
        step()
        layers = precision.capture(model, tok, spec.precision, torch_device)  # on every rank: forwards are collective
        he = None
        if spec.humaneval is not None:
            he = humaneval.run(model, tok, spec.humaneval, torch_device, spec.seed, lead=lead,
                               progress=lambda phase, total: bar(f"HumanEval {phase}", total))
    if not lead:
        return None
    doc = rundoc.new_document(
        device={"class": device.device_class, "type": device.type, "name": device.name, "count": world},
        environment=environment.capture(device), job_name=spec.name, fingerprint=spec.fingerprint,
        spec=spec.to_dict(), started_at=started)
    doc["environment"].update(model_dir=str(model_dir), model_load_s=round(load_s, 3), peak_bandwidth_gbps=peak_gbps,
                              peak_bandwidth_source=peak_source, tensor_parallel_ranks=world)
    doc["perf"], doc["humaneval"], doc["token_probe"], doc["precision"] = records, he, probe, layers
    doc["extra"] = {"energy": energy}
    doc["finished_at"] = rundoc.now()
    return rundoc.validate(doc)


def preflight(spec: JobSpec, device: devices.Device, model_path: str | None, nodes=None):
    """Everything that can refuse a job before any rank starts, cheapest first: its size against the model's heads
    and this host's devices, its memory fit at that size (from the model's config: no weights, no conversion),
    then the model itself (converted once into the cache where needed). Returns the model's local directory."""
    from runner.preflight import fit
    from runner.tp import launch

    nodes = nodes or launch.Nodes()
    config = models.config_for(spec.model, model_path)
    launch.check_size(config, spec.model.tensor_parallel, device, nodes)
    local = models.local_dir(spec.model, model_path)
    tokenizer = None
    if local is not None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(local)
    fit.require(spec, device, config, nnodes=nodes.count, tokenizer=tokenizer)
    return models.resolve(spec.model, model_path)


def submit_job(spec: JobSpec, device: devices.Device, *, model_path: str | None = None,
               console: Console | None = None, nodes=None) -> dict | None:
    """Run the job in this process, or on N tensor-parallel ranks (across `nodes`); returns the validated run
    document, or None on a node other than node 0 (whose rank 0 keeps the records)."""
    from runner.tp import launch

    nodes = nodes or launch.Nodes()
    preflight(spec, device, model_path, nodes)
    if spec.model.tensor_parallel == 1:
        return run_job(spec, device, model_path=model_path, console=console)
    doc = launch.run_tensor_parallel(spec, device, model_path, nodes)
    return rundoc.validate(doc) if doc is not None else None
