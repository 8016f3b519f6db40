"""Device classes (cpu, A100, H100, 910B3, 910B4): detection, synchronisation, peak memory.

The declared `--device` is checked against the hardware torch sees; a mismatch is a UserError that says what was
found. torch_npu is imported only on the npu path, and every way it can fail without CANN counts as "no npu here"
(even `import torch` can fail when torch_npu is installed without CANN).
"""
from __future__ import annotations

import platform
from dataclasses import dataclass

from core.errors import UserError

# device class -> (torch device type, distributed backend, substring of the detected device name)
DEVICE_CLASSES: dict[str, tuple[str, str, str]] = {
    "cpu": ("cpu", "gloo", ""),
    "A100": ("cuda", "nccl", "A100"),
    "H100": ("cuda", "nccl", "H100"),
    "910B3": ("npu", "hccl", "910B3"),
    "910B4": ("npu", "hccl", "910B4"),
}


@dataclass(frozen=True)
class Device:
    device_class: str  # as declared: "910B3"
    type: str  # torch device type: "npu"
    name: str  # as detected: "Ascend910B3", "NVIDIA A100-SXM4-80GB", CPU model
    count: int  # devices of that type visible on this host
    backend: str  # torch.distributed backend for tensor parallel

    def torch_device(self, index: int = 0) -> str:
        return "cpu" if self.type == "cpu" else f"{self.type}:{index}"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def import_torch_npu():
    """Import torch_npu, or return the reason it is unusable here (no package, no CANN, no device)."""
    try:
        import torch_npu  # noqa: F401  (registers torch.npu)
    except ImportError as e:
        return None, f"torch_npu cannot be imported ({str(e).splitlines()[0]}); install torch_npu and source CANN's set_env.sh"
    except Exception as e:  # CANN missing or broken raises RuntimeError/OSError at import
        return None, f"torch_npu failed to load ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    import torch

    if not torch.npu.is_available():
        return None, "torch_npu is installed but torch.npu.is_available() is False (driver or device files missing?)"
    return torch, None


def _found_summary() -> str:
    """What this host has, for mismatch messages."""
    import torch

    parts = [f"cpu ({cpu_model()})"]
    if torch.cuda.is_available():
        parts.append(f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}")
    return ", ".join(parts)


def known(device_class: str) -> str:
    """The device class itself, or a UserError listing the known ones (without looking at the hardware)."""
    if device_class not in DEVICE_CLASSES:
        raise UserError(f"unknown device '{device_class}' (known: {', '.join(DEVICE_CLASSES)})")
    return device_class


def detect(device_class: str) -> Device:
    dtype, backend, marker = DEVICE_CLASSES[known(device_class)]
    if dtype == "cpu":
        import os

        return Device(device_class, "cpu", cpu_model(), len(os.sched_getaffinity(0)), backend)
    if dtype == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"--device {device_class} declared, but no CUDA device is visible; found: {_found_summary()}")
        name = torch.cuda.get_device_name(0)
        if marker not in name:
            raise UserError(f"--device {device_class} declared, but the GPU is '{name}'")
        return Device(device_class, "cuda", name, torch.cuda.device_count(), backend)
    torch, why = import_torch_npu()
    if torch is None:
        raise UserError(f"--device {device_class} declared, but no Ascend NPU is usable: {why}")
    name = torch.npu.get_device_name(0)
    if marker not in name:
        raise UserError(f"--device {device_class} declared, but the NPU is '{name}'")
    return Device(device_class, "npu", name, torch.npu.device_count(), backend)


def device_module(device_type: str):
    """torch.cuda / torch.npu (same API names), or None for cpu."""
    import torch

    return {"cuda": torch.cuda, "npu": getattr(torch, "npu", None)}.get(device_type)


def synchronize(device_type: str) -> None:
    mod = device_module(device_type)
    if mod is not None:
        mod.synchronize()


def reset_peak_memory(device_type: str) -> None:
    mod = device_module(device_type)
    if mod is not None:
        mod.reset_peak_memory_stats()


def peak_memory_bytes(device_type: str) -> int:
    """Peak allocator memory on the accelerator; on cpu the process's peak resident set size."""
    mod = device_module(device_type)
    if mod is not None:
        return int(mod.max_memory_allocated())
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB
