"""How close a device gets to its physical limit: peak memory bandwidth of known devices, a measured one for CPUs,
and the bandwidth a decode step achieves.

Decode at small batch is memory-bound: each step reads the rank's weight shard and its KV cache once, so
    bandwidth_gbps = bytes read per decode step per device x decode steps per second
    bandwidth_util = bandwidth_gbps / the device's peak
(gpt-fast's "Bandwidth achieved: ... GB/s"; nanoGPT names the peak it divides by the same way).
"""
from __future__ import annotations

import re
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


# Matched in order against the detected device name (torch.cuda/npu.get_device_name()), case-insensitively: every
# pattern of an entry must match, first entry wins. The memory size and the form factor are part of NVIDIA's names
# ("NVIDIA A100-PCIE-40GB", "NVIDIA A100 80GB PCIe", "NVIDIA H100 NVL"); A800/H800 share A100/H100's memory.
_A100, _H100 = r"\bA[18]00\b", r"\bH[18]00\b"
KNOWN: list[tuple[tuple[str, ...], Peak]] = [
    ((_A100, r"80\s*GB", r"PCIe"), Peak("A100/A800 80GB PCIe", 1935, 312, 80, "NVIDIA A100 datasheet")),
    ((_A100, r"80\s*GB"), Peak("A100/A800 80GB SXM", 2039, 312, 80, "NVIDIA A100 datasheet")),
    ((_A100,), Peak("A100/A800 40GB", 1555, 312, 40, "NVIDIA A100 datasheet")),
    ((r"\bH200\b", r"NVL"), Peak("H200 NVL", 4800, 835, 141, "NVIDIA H200 datasheet")),
    ((r"\bH200\b",), Peak("H200 SXM", 4800, 989, 141, "NVIDIA H200 datasheet")),
    ((r"\bH20\b",), Peak("H20", 4000, 148, 96, "NVIDIA H20 product brief")),
    ((_H100, r"NVL"), Peak("H100 NVL", 3900, 835, 94, "NVIDIA H100 datasheet")),
    ((_H100, r"PCIe"), Peak("H100/H800 PCIe", 2000, 756, 80, "NVIDIA H100 datasheet")),
    ((_H100,), Peak("H100/H800 SXM", 3350, 989, 80, "NVIDIA H100 datasheet")),
    ((r"910B3",), Peak("Ascend 910B3", 1600, 313, 64, "public Atlas 800T A2 figures (approximate)")),
    ((r"910B4",), Peak("Ascend 910B4", 800, 280, 32, "public Atlas 800I A2 figures (approximate)")),
]


def known_peak(device_name: str | None) -> Peak | None:
    for patterns, peak in KNOWN:
        if device_name and all(re.search(p, device_name, re.IGNORECASE) for p in patterns):
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
    """Weights shard + mean KV cache over the decode steps, per device, in bytes.

    A step reads every weight once, except the input embedding: the lookup reads one row per sequence. Where the
    embedding is tied to the output projection, the projection reads all of it anyway.
    """
    cfg = model.config
    embedding = model.get_input_embeddings().weight
    output = model.get_output_embeddings()
    tied = output is not None and output.weight is embedding
    elem = embedding.element_size()
    weight_bytes = sum(_local(p).numel() * p.element_size() for p in model.parameters()
                       if tied or p is not embedding)
    if not tied:
        weight_bytes += batch_size * cfg.hidden_size * elem
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    mean_len = prompt_tokens + new_tokens / 2  # cache length grows by one per step
    kv_bytes = cfg.num_hidden_layers * 2 * kv_heads * head_dim * mean_len * batch_size * elem / tensor_parallel
    return weight_bytes + kv_bytes


def achieved(bytes_per_step: float, decode_tokens_per_s: float, batch_size: int, peak_gbps: float | None) -> tuple[float, float | None]:
    """(bandwidth_gbps, bandwidth_util) for a decode speed in tokens/s over the whole batch."""
    gbps = bytes_per_step * (decode_tokens_per_s / batch_size) / 1e9
    return gbps, (gbps / peak_gbps if peak_gbps else None)
