"""The precision pass of a run: forward hooks on the watched layers while the model reads fixed HumanEval prompts;
each layer's output becomes exact statistics and a count sketch (core.precision), the logits also their top_k.

One forward pass per prompt (batch 1: no padding in the vectors), no generation. Under tensor parallel every rank
runs `capture` (the forward passes are collective); the hooked outputs are the decoder layers' and the final norm's
after the all-reduce, and the logits after the gather, so every rank holds them whole and rank 0's section is the
run's. Statistics and sketches accumulate in float64 where the device has it, float32 elsewhere (Ascend).

Example:
    section = capture(model, tokenizer, spec.precision, "cpu")   # the run document's "precision", or None when off
"""
from __future__ import annotations

import time
from collections.abc import Iterator

import torch

from core import precision as core
from core.errors import UserError
from runner import models
from runner.humaneval.generation import pick_problems
from runner.spec import PrecisionSpec


def watched_modules(model, names: list[str]) -> dict[str, object]:
    """{layer name: module} for the spec's names ("layers" for every decoder layer, "layers.N", "norm"), in depth
    order; "logits" needs no module (the model's output)."""
    base = model.get_decoder()
    layers, norm = getattr(base, "layers", None), getattr(base, "norm", None)
    if layers is None or norm is None:
        raise UserError(f"precision: {type(model).__name__} has no decoder layers and final norm where Llama-style "
                        "models keep them; turn the pass off with precision = false")
    wanted = {f"layers.{i}" for i in range(len(layers))} if "layers" in names else set()
    wanted |= {n for n in names if n not in ("layers", "logits")}
    unknown = sorted(wanted - {f"layers.{i}" for i in range(len(layers))} - {"norm"})
    if unknown:
        raise UserError(f"precision.layers: {', '.join(unknown)} not in this model (layers.0 to "
                        f"layers.{len(layers) - 1}, norm, logits)")
    ordered = {f"layers.{i}": m for i, m in enumerate(layers)} | {"norm": norm}
    return {name: module for name, module in ordered.items() if name in wanted}


def _whole(output):
    """A hooked output as one local tensor: decoder layers may return a tuple, sharded models a DTensor."""
    out = output[0] if isinstance(output, tuple) else output
    return out.full_tensor() if hasattr(out, "full_tensor") else out


def layer_outputs(model, tokenizer, prompts: list[str], names: list[str], torch_device: str) -> Iterator[tuple]:
    """(prompt index, token count, {layer name: output [tokens, width]}) per prompt, logits included when watched."""
    modules = watched_modules(model, names)
    seen: dict = {}
    handles = [m.register_forward_hook(lambda _m, _i, out, name=name: seen.__setitem__(name, _whole(out).detach()))
               for name, m in modules.items()]
    try:
        for index, prompt in enumerate(prompts):
            ids = tokenizer(prompt, return_tensors="pt")["input_ids"].to(torch_device)  # [1, T]
            seen.clear()
            with models.inference(model):
                out = model(input_ids=ids, use_cache=False)
            outputs = {name: seen[name][0] for name in modules}
            if "logits" in names:
                outputs["logits"] = _whole(out.logits).detach()[0]
            yield index, ids.shape[1], outputs
    finally:
        for h in handles:
            h.remove()


def _sketch_into(sketch, values, rows: tuple, cols: tuple) -> None:
    """Add the count sketch of `values` [tokens, width] (core.precision) into `sketch`, given the rows' and columns'
    buckets and signs. A block wider than the sketch (the logits) is first folded column-wise into [tokens, size],
    whose column j then lands in bucket h_row + j: one pass over the block and no hash per element."""
    size = sketch.numel()
    (row_b, row_s), (col_b, col_s) = rows, cols
    if values.shape[1] > size:
        values = torch.zeros(values.shape[0], size, dtype=values.dtype, device=values.device).index_add_(
            1, col_b, values * col_s)
        col_b, col_s = torch.arange(size, device=values.device), 1
    buckets = row_b[:, None] + col_b[None, :]
    buckets = torch.where(buckets >= size, buckets - size, buckets)  # (h_row + h_col) mod size, both below size
    sketch.index_add_(0, buckets.reshape(-1), (values * row_s[:, None] * col_s).reshape(-1))


class _Layer:
    """Running sums and sketch of one layer over the prompts, kept on the device until the record is made."""

    def __init__(self, size: int, dtype, device):
        self.sums = torch.zeros(3, dtype=dtype, device=device)  # total, total_sq, max_abs of the finite values
        self.sketch = torch.zeros(size, dtype=dtype, device=device)
        self.elements = self.nan = self.inf = 0

    def add(self, x, rows: tuple, cols: tuple) -> None:
        self.elements += x.numel()
        finite = torch.isfinite(x)
        bad = int((~finite).sum())
        if bad:  # rare: count what is not finite, then leave it out of the sums and the sketch
            nan = int(torch.isnan(x).sum())
            self.nan, self.inf = self.nan + nan, self.inf + bad - nan
            x = torch.where(finite, x, 0)
        values = x.to(self.sketch.dtype)
        flat, s = values.reshape(-1), self.sums
        s[0] += flat.sum()
        s[1] += torch.dot(flat, flat)
        s[2] = torch.maximum(s[2], x.abs().max().to(s.dtype))
        _sketch_into(self.sketch, values, rows, cols)

    def record(self, name: str) -> dict:
        total, total_sq, max_abs = self.sums.tolist()
        return core.layer_record(name, elements=self.elements, total=total, total_sq=total_sq, max_abs=max_abs,
                                 nan=self.nan, inf=self.inf, sketch_values=self.sketch.cpu().numpy())


def _hashes(first: int, count: int, size: int, part: str, dtype, device) -> tuple:
    """Buckets and signs of `count` rows or columns from `first`, hashed on the CPU (exact int64 arithmetic on any
    accelerator is not a given) and moved to `device`."""
    buckets, signs = core.buckets_and_signs(torch.arange(first, first + count, dtype=torch.int64), size, part)
    return buckets.to(device), signs.to(dtype).to(device)


def capture(model, tokenizer, spec: PrecisionSpec | None, torch_device: str) -> dict | None:
    """The run document's `precision` section for `spec` (None when the pass is off)."""
    if spec is None:
        return None
    t0 = time.perf_counter()
    problems = pick_problems(spec.prompts, "precision.prompts")
    size = spec.sketch_size
    dtype = torch.float64 if torch.device(torch_device).type in ("cpu", "cuda") else torch.float32
    layers: dict[str, _Layer] = {}
    cols: dict[int, tuple] = {}  # per width: the columns' buckets and signs
    top_ids, top_lp, tokens = [], [], []
    for _index, count, outputs in layer_outputs(model, tokenizer, [p["prompt"] for p in problems], spec.layers,
                                                torch_device):
        device = next(iter(outputs.values())).device
        rows = _hashes(sum(tokens), count, size, "row", dtype, device)  # token numbers continue across prompts
        for name, x in outputs.items():
            if x.shape[-1] not in cols:
                cols[x.shape[-1]] = _hashes(0, x.shape[-1], size, "col", dtype, device)
            layers.setdefault(name, _Layer(size, dtype, device)).add(x, rows, cols[x.shape[-1]])
        tokens.append(count)
        if "logits" in outputs:
            lp, ids = torch.log_softmax(outputs["logits"].float(), dim=-1).topk(spec.top_k, dim=-1)
            top_ids.append(ids.cpu())
            top_lp.append(lp.cpu())
    logits = core.logits_record(torch.cat(top_ids).numpy(), torch.cat(top_lp).numpy()) if top_ids else None
    return core.section(tasks=[p["task_id"] for p in problems], tokens=tokens, size=size,
                        layers=[layer.record(name) for name, layer in layers.items()], logits=logits,
                        seconds=round(time.perf_counter() - t0, 3))
