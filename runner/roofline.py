"""How close a device gets to its physical limit: peak memory bandwidth of known devices, a measured one for CPUs,
and the bandwidth a decode step achieves.

Decode at small batch is memory-bound: each step reads the rank's weight shard and its KV cache once, so
    bandwidth_gbps = bytes read per decode step per device x decode steps per second
    bandwidth_util = bandwidth_gbps / the device's peak
(gpt-fast's "Bandwidth achieved: ... GB/s"; nanoGPT names the peak it divides by the same way).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cache


@dataclass(frozen=True)
class Peak:
    name: str
    bandwidth_gbps: float  # HBM peak, GB/s (1e9 bytes)
    fp16_tflops: float | None  # dense, no sparsity
    memory_gb: float
    source: str


# Matched in order against the detected device name (torch.cuda/npu.get_device_name()); first hit wins.
KNOWN: list[tuple[tuple[str, ...], Peak]] = [
    (("A100", "80GB", "PCIe"), Peak("A100 80GB PCIe", 1935, 312, 80, "NVIDIA A100 datasheet")),
    (("A100", "80GB"), Peak("A100 80GB SXM", 2039, 312, 80, "NVIDIA A100 datasheet")),
    (("A100",), Peak("A100 40GB", 1555, 312, 40, "NVIDIA A100 datasheet")),
    (("H100", "PCIe"), Peak("H100 PCIe", 2000, 756, 80, "NVIDIA H100 datasheet")),
    (("H100",), Peak("H100 SXM", 3350, 989, 80, "NVIDIA H100 datasheet")),
    (("910B3",), Peak("Ascend 910B3", 1600, 313, 64, "public Atlas 800T A2 figures (approximate)")),
    (("910B4",), Peak("Ascend 910B4", 800, 280, 32, "public Atlas 800I A2 figures (approximate)")),
]


def known_peak(device_name: str | None) -> Peak | None:
    for markers, peak in KNOWN:
        if device_name and all(m in device_name for m in markers):
            return peak
    return None


@cache
def measured_cpu_bandwidth_gbps(megabytes: int = 256, repeats: int = 5) -> float:
    """Best-of-N copy bandwidth with torch's own threads (read + write counted, as STREAM's copy does)."""
    import torch

    src = torch.ones(megabytes * 2**20 // 4, dtype=torch.float32)
    dst = torch.empty_like(src)
    dst.copy_(src)  # fault the pages in before timing
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.numel() * 4 / best / 1e9


def peak_bandwidth_gbps(device_type: str, device_name: str | None) -> tuple[float | None, str]:
    """(peak GB/s, where it comes from); cpu is measured on this host."""
    if device_type == "cpu":
        return measured_cpu_bandwidth_gbps(), "measured copy bandwidth"
    peak = known_peak(device_name)
    return (peak.bandwidth_gbps, peak.name) if peak else (None, "unknown device")


def _local(param):
    """This rank's shard: under tensor parallel a parameter may be a DTensor whose numel() is the global size."""
    to_local = getattr(param, "to_local", None)
    return to_local() if to_local is not None else param


def decode_bytes_per_step(model, batch_size: int, prompt_tokens: int, new_tokens: int, tensor_parallel: int) -> float:
    """Weights shard + mean KV cache over the decode steps, per device, in bytes."""
    cfg = model.config
    weight_bytes = sum(_local(p).numel() * p.element_size() for p in model.parameters())
    elem = next(model.parameters()).element_size()
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    mean_len = prompt_tokens + new_tokens / 2  # cache length grows by one per step
    kv_bytes = cfg.num_hidden_layers * 2 * kv_heads * head_dim * mean_len * batch_size * elem / tensor_parallel
    return weight_bytes + kv_bytes


def achieved(bytes_per_step: float, decode_tokens_per_s: float, batch_size: int, peak_gbps: float | None) -> tuple[float, float | None]:
    """(bandwidth_gbps, bandwidth_util) for a decode speed in tokens/s over the whole batch."""
    gbps = bytes_per_step * (decode_tokens_per_s / batch_size) / 1e9
    return gbps, (gbps / peak_gbps if peak_gbps else None)
