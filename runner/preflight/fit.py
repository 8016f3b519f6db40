"""Memory fit: does a job fit in device memory at a tensor-parallel size, before any weights load?

Per rank: weights (the parameters transformers' tensor-parallel plan shards count 1/TP, the rest in full) + the
KV cache of the job's largest batch x sequence (perf timing, the token probe, HumanEval generation) + headroom
(HEADROOM_FRACTION of both, plus HEADROOM_BYTES for the runtime's context, workspaces and activations). The
parameters are counted on the meta device: the model is built from its config without allocating a byte.

On an accelerator each local rank has its own device, so every device in use needs the per-rank figure free; on a
CPU all ranks of a host share its memory, so the host needs the per-rank figure times its ranks.
"""
from __future__ import annotations

import fnmatch
import math
from dataclasses import asdict, dataclass

from core.errors import UserError

HEADROOM_FRACTION = 0.10
HEADROOM_BYTES = 1 << 30
GB = 1e9
PROBE_CELLS = 512 + 64  # the token probe: one prompt at a time, each well under 512 tokens, then 64 new tokens


@dataclass(frozen=True)
class Fit:
    tensor_parallel: int
    weights_bytes: int  # per rank
    kv_bytes: int  # per rank
    headroom_bytes: int
    per_rank_bytes: int
    ranks_on_host: int
    need_bytes: int  # on the tightest device (accelerators) or the whole host (cpu)
    available_bytes: int | None
    fits: bool
    why: str  # what does not fit, or ""

    def as_dict(self) -> dict:
        return asdict(self)


def _shard_plan(model, config) -> dict[str, str]:
    """Module-name patterns transformers shards under tensor parallel ("model.layers.*.mlp.up_proj": "colwise")."""
    plan = dict(getattr(model, "tp_plan", None) or getattr(model, "_tp_plan", None) or {})
    prefix = getattr(model, "base_model_prefix", "model")
    plan.update({f"{prefix}.{k}": v for k, v in (getattr(config, "base_model_tp_plan", None) or {}).items()})
    return {k: v for k, v in plan.items() if "colwise" in v or "rowwise" in v}


def weight_split(config, dtype: str) -> tuple[int, int]:
    """(bytes of sharded parameters, bytes of replicated ones) for the whole model."""
    import torch
    from transformers import AutoModelForCausalLM

    torch_dtype = getattr(torch, dtype)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    plan = _shard_plan(model, config)
    elem = torch.empty((), dtype=torch_dtype).element_size()
    sharded = replicated = 0
    for name, p in model.named_parameters():  # a tied weight is listed once
        module = name.rsplit(".", 1)[0]
        if any(fnmatch.fnmatchcase(module, pattern) for pattern in plan):
            sharded += p.numel() * elem
        else:
            replicated += p.numel() * elem
    return sharded, replicated


def longest_sequences(spec, tokenizer=None) -> int:
    """The largest batch x tokens the job holds in its KV cache at once."""
    p = spec.perf
    cells = [max(p.batch_sizes) * (p.prompt_tokens + p.new_tokens), PROBE_CELLS]
    h = spec.humaneval
    if h is not None:
        from runner.humaneval import generation

        longest = 0
        for problem in generation.select_problems(h):
            if tokenizer is not None:
                longest = max(longest, len(tokenizer(generation.build_prompt(problem, h.prompt_style, tokenizer))
                                            ["input_ids"]))
            else:  # no tokenizer here: a token covers at least one byte, and a chat template adds a few dozen
                text = generation.INSTRUCTION.format(prompt=problem["prompt"])
                longest = max(longest, len(text.encode()) + 64)
        cells.append(h.batch_size * (longest + h.max_new_tokens))
    return max(cells)


def kv_bytes(config, elem: int, cells: int, tensor_parallel: int) -> int:
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return config.num_hidden_layers * 2 * math.ceil(kv_heads / tensor_parallel) * head_dim * cells * elem


def available(device) -> tuple[int, ...]:
    """Free memory now: the host's available memory (cpu) or each visible device's free memory."""
    from runner import devices

    if device.type == "cpu":
        return (devices.host_memory()[0],)
    return devices.detect(device.device_class).free_bytes


def fits(config, spec, device, free: tuple[int, ...], *, nnodes: int = 1, tokenizer=None,
         sizes: list[int] | None = None) -> list[Fit]:
    """One Fit per tensor-parallel size the model's heads allow (or `sizes`), smallest first."""
    import torch

    from runner.tp.launch import valid_sizes

    sharded, replicated = weight_split(config, spec.model.dtype)
    elem = torch.empty((), dtype=getattr(torch, spec.model.dtype)).element_size()
    cells = longest_sequences(spec, tokenizer)
    out = []
    for tp in sizes or valid_sizes(config):
        weights = math.ceil(sharded / tp) + replicated
        kv = kv_bytes(config, elem, cells, tp)
        headroom = int(HEADROOM_FRACTION * (weights + kv)) + HEADROOM_BYTES
        per_rank = weights + kv + headroom
        on_host = math.ceil(tp / nnodes)
        if device.type == "cpu":
            need, have = per_rank * on_host, free[0] if free else None
            ok = have is not None and need <= have
            where = f"the {on_host} ranks on this host need" if on_host > 1 else "this host needs"
            why = "" if ok else f"{where} {need / GB:.1f} GB, {have / GB:.1f} GB available"
        elif on_host > len(free):
            need, have, ok = per_rank, None, False
            why = f"{on_host} ranks per host, {len(free)} device(s) here"
        else:
            need, have = per_rank, min(free[:on_host])
            ok = need <= have
            why = "" if ok else f"a device in use has {have / GB:.1f} GB free"
        out.append(Fit(tp, weights, kv, headroom, per_rank, on_host, need, have, ok, why))
    return out


def describe(fit: Fit, model: str, dtype: str) -> str:
    """One line with the numbers: what one rank needs at this size, and whether it fits."""
    parts = (f"weights {fit.weights_bytes / GB:.1f} GB + KV cache {fit.kv_bytes / GB:.2f} GB + headroom "
             f"{fit.headroom_bytes / GB:.1f} GB")
    verdict = "fits" if fit.fits else f"does not fit ({fit.why})"
    return f"{model} {dtype} at TP {fit.tensor_parallel} needs {fit.per_rank_bytes / GB:.1f} GB per rank ({parts}): {verdict}"


def alternatives(all_fits: list[Fit]) -> str:
    working = [f.tensor_parallel for f in all_fits if f.fits]
    if working:
        return f"sizes that fit: {', '.join(map(str, working))} (smallest: TP {working[0]})"
    return "no tensor-parallel size fits this host (" + ", ".join(
        f"TP {f.tensor_parallel} needs {f.need_bytes / GB:.1f} GB" for f in all_fits) + ")"


def require(spec, device, config, *, nnodes: int = 1, tokenizer=None) -> Fit | None:
    """Refuse, before any rank starts, a job that cannot fit at its tensor-parallel size; say which sizes would."""
    all_fits = fits(config, spec, device, available(device), nnodes=nnodes, tokenizer=tokenizer)
    mine = next((f for f in all_fits if f.tensor_parallel == spec.model.tensor_parallel), None)
    if mine is None:  # a size the heads do not allow is refused elsewhere with its own message
        return None
    if not mine.fits:
        raise UserError(f"{describe(mine, spec.model.name, spec.model.dtype)}; {alternatives(all_fits)}")
    return mine
