"""Inference timing: TTFT, first-token and decode tokens/s, TPOT, as the README's metric definitions pin them.

One timed call = prefill of an already tokenized, already on-device batch, then greedy decode of `new_tokens - 1`
more tokens, EOS ignored so every device generates the same length (gpt-fast's prefill -> decode_n_tokens chain).
- ttft: device synced, model call starts ... first new token is on the host, device synced.
- e2e: same start ... all new tokens on the host.
- first_token_tokens_per_s = B / ttft;  decode_tokens_per_s = B * (n - 1) / (e2e - ttft);  tpot = (e2e - ttft) / (n - 1)
W warm-ups are discarded (they absorb operator compilation on npu); the median of R repeats is the figure, with
p10/p90 and every raw repeat kept. Board power is sampled during the repeats (runner.power): joules per token of
each phase, summed over the job's ranks.
"""
from __future__ import annotations

import contextlib
import inspect
import os
import time
from collections.abc import Callable

import numpy as np

from runner import devices, models, power

CONTENTION_THRESHOLD = 0.25  # other processes' CPU use, in cores, above which a record is flagged


def stats(values: list[float]) -> dict:
    arr = np.asarray(values, dtype=float)
    return {"median": float(np.median(arr)), "p10": float(np.percentile(arr, 10)),
            "p90": float(np.percentile(arr, 90)), "raw": [float(v) for v in arr]}


class CpuLoad:
    """CPU time used on the host by processes other than ours (and our children) during a window, in cores.

    The reference report warns that host CPU contention distorts accelerator timings; this makes it visible.
    """

    def __enter__(self):
        import psutil

        self._proc = psutil.Process()
        self._t0, self._sys0, self._own0 = time.perf_counter(), self._busy(), self._own()
        return self

    def _busy(self) -> float:
        import psutil

        t = psutil.cpu_times()
        return t.user + t.system + getattr(t, "nice", 0.0) + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)

    def _own(self) -> float:
        """CPU seconds of this job's processes: ourselves, or under torchrun every rank (the launcher's children),
        since the ranks of one tensor-parallel job share the host by design and are not contention."""
        import psutil

        procs = [self._proc]
        if "TORCHELASTIC_RUN_ID" in os.environ:
            try:
                procs = psutil.Process(self._proc.ppid()).children(recursive=True) or procs
            except psutil.Error:
                pass
        total = 0.0
        for p in procs:
            try:
                c = p.cpu_times()
                total += c.user + c.system
            except psutil.Error:
                pass
        return total

    def __exit__(self, *exc):
        wall = max(time.perf_counter() - self._t0, 1e-9)
        self.own_cores = (self._own() - self._own0) / wall
        self.other_cores = max(0.0, (self._busy() - self._sys0) / wall - self.own_cores)
        return False


def cache_kwarg(model) -> str:
    """transformers >= 5.24 names the KV-cache argument `cache`; older releases (Ascend stacks) `past_key_values`."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def timed_call(model, input_ids, new_tokens: int, device_type: str,
               marks: list | None = None) -> tuple[float, float, "object"]:
    """One prefill + greedy decode; returns (ttft_s, e2e_s, new token ids [B, new_tokens] on the host). `marks`
    gets (start, first token, end) in perf_counter seconds, for the energy of each phase."""
    import torch
    from transformers import DynamicCache

    kw = cache_kwarg(model)
    with models.inference(model):
        cache = DynamicCache(config=model.config)
        devices.synchronize(device_type)
        start = time.perf_counter()
        out = model(input_ids=input_ids, **{kw: cache}, use_cache=True, logits_to_keep=1)
        token = out.logits[:, -1].argmax(dim=-1, keepdim=True)  # [B, 1]
        tokens = [token.cpu()]  # .cpu() waits for the value: the first token is on the host
        devices.synchronize(device_type)
        ttft = time.perf_counter() - start
        device_tokens = []
        for _ in range(new_tokens - 1):
            out = model(input_ids=token, **{kw: cache}, use_cache=True, logits_to_keep=1)
            token = out.logits[:, -1].argmax(dim=-1, keepdim=True)  # [B, 1]
            device_tokens.append(token)
        if device_tokens:
            tokens.append(torch.cat(device_tokens, dim=1).cpu())
        devices.synchronize(device_type)
        e2e = time.perf_counter() - start
    if marks is not None:
        marks.append((start, start + ttft, start + e2e))
    return ttft, e2e, torch.cat(tokens, dim=1)


def synthetic_prompt(vocab_size: int, batch_size: int, prompt_tokens: int, seed: int, device: str):
    """Seeded random token ids, identical on every device for the same job (the prompt's content is irrelevant)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    # [B, prompt_tokens]; ids from the lower part of the vocabulary, away from special tokens at the end
    return torch.randint(0, max(2, vocab_size - 256), (batch_size, prompt_tokens), generator=gen).to(device)


def _all_ranks(record: dict) -> list[dict]:
    """Every rank's record (this one alone outside tensor parallel)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [record]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, record)
    return gathered


def measure(model, device_type: str, torch_device: str, *, batch_size: int, prompt_tokens: int, new_tokens: int,
            warmup: int, repeats: int, seed: int, step: Callable[[], None] | None = None,
            meter: tuple | None = None) -> dict:
    """Perf record for one batch size. `step` is called after each warm-up and repeat (progress bars); `meter` is
    this rank's (power.Meter or None, why not), from power.meter_for."""
    input_ids = synthetic_prompt(model.config.vocab_size, batch_size, prompt_tokens, seed, torch_device)
    for _ in range(warmup):
        timed_call(model, input_ids, new_tokens, device_type)
        if step:
            step()
    devices.reset_peak_memory(device_type)
    meter, why = meter or (None, "not metered")
    ttfts, e2es, marks = [], [], []
    with CpuLoad() as load, (power.Sampler(meter) if meter else contextlib.nullcontext()) as sampler:
        for _ in range(repeats):
            ttft, e2e, _tokens = timed_call(model, input_ids, new_tokens, device_type, marks)
            ttfts.append(ttft)
            e2es.append(e2e)
            if step:
                step()
    energy = power.per_token(_all_ranks(power.rank_energy(sampler, meter, why, marks)), batch_size, repeats,
                             new_tokens)
    decode = [e - t for e, t in zip(e2es, ttfts)]
    return {
        "batch_size": batch_size, "prompt_tokens": prompt_tokens, "new_tokens": new_tokens,
        "warmup": warmup, "repeats": repeats,
        "ttft_ms": stats([t * 1e3 for t in ttfts]),
        "e2e_ms": stats([e * 1e3 for e in e2es]),
        "tpot_ms": stats([d * 1e3 / (new_tokens - 1) for d in decode]),
        "first_token_tokens_per_s": stats([batch_size / t for t in ttfts]),
        "decode_tokens_per_s": stats([batch_size * (new_tokens - 1) / d for d in decode]),
        "peak_memory_bytes": devices.peak_memory_bytes(device_type),
        "cpu_own_cores": round(load.own_cores, 3),
        "cpu_other_cores": round(load.other_cores, 3),
        "cpu_contention": load.other_cores > CONTENTION_THRESHOLD,
        "energy": energy,  # moved to the document's extra.energy by runner.submit (the store keeps it there)
    }
