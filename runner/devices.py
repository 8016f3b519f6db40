"""Device classes (cpu, A100, H100, H20, H200, 910B3, 910B4): detection, synchronisation, peak memory.

The declared `--device` is checked against the hardware torch sees; a mismatch is a UserError that says what was
found. torch_npu is imported only on the npu path, and every way it can fail without CANN counts as "no npu here"
(even `import torch` can fail when torch_npu is installed without CANN).

Any first question to torch.cuda or torch.npu opens a device context, on device 0 unless a device was set. So a
long-lived process (`runner submit`, the agent, doctor) asks in a short subprocess (`python -m runner.devices`) and
holds no device itself, and each tensor-parallel rank sets its own device before asking anything (`bind`).
"""
from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
from dataclasses import dataclass

from core.errors import UserError

# device class -> (torch device type, distributed backend for tensor parallel)
DEVICE_CLASSES: dict[str, tuple[str, str]] = {
    "cpu": ("cpu", "gloo"),
    "A100": ("cuda", "nccl"),
    "H100": ("cuda", "nccl"),
    "H20": ("cuda", "nccl"),
    "H200": ("cuda", "nccl"),
    "910B3": ("npu", "hccl"),
    "910B4": ("npu", "hccl"),
}
# Which class a detected name belongs to, matched case-insensitively, first match wins (H200 before H20). A800 and
# H800 are the export variants of A100 and H100 (same chip and memory, slower NVLink) and run as those classes; the
# detected name is stored with every run, so the difference stays visible.
NAME_CLASSES: tuple[tuple[str, str], ...] = (
    ("H200", r"\bH200\b"), ("H20", r"\bH20\b"), ("H100", r"\bH[18]00\b"), ("A100", r"\bA[18]00\b"),
    ("910B3", r"910B3"), ("910B4", r"910B4"),
)
PROBE_TIMEOUT_S = 180  # CANN's first initialisation can take a minute


@dataclass(frozen=True)
class Device:
    device_class: str  # as declared: "910B3"
    type: str  # torch device type: "npu"
    name: str  # as detected: "Ascend910B3", "NVIDIA A100-SXM4-80GB", CPU model
    count: int  # devices of that type visible on this host (cpu: cores)
    backend: str  # torch.distributed backend for tensor parallel
    free_bytes: tuple[int, ...] = ()  # free memory per visible device when detected (cpu: the host's available)
    total_bytes: tuple[int, ...] = ()

    def torch_device(self, index: int = 0) -> str:
        return "cpu" if self.type == "cpu" else f"{self.type}:{index}"


def classify(device_name: str | None) -> str | None:
    """The device class a detected name belongs to, or None."""
    for device_class, pattern in NAME_CLASSES:
        if device_name and re.search(pattern, device_name, re.IGNORECASE):
            return device_class
    return None


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_memory() -> tuple[int, int]:
    """(available, total) bytes of host memory."""
    import psutil

    vm = psutil.virtual_memory()
    return int(vm.available), int(vm.total)


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


def known(device_class: str) -> str:
    """The device class itself, or a UserError listing the known ones (without looking at the hardware)."""
    if device_class not in DEVICE_CLASSES:
        raise UserError(f"unknown device '{device_class}' (known: {', '.join(DEVICE_CLASSES)})")
    return device_class


def _accelerator(device_type: str):
    """torch.cuda or torch.npu, usable; otherwise (None, why not)."""
    if device_type == "npu":
        torch, why = import_torch_npu()
        return (torch.npu, None) if torch is not None else (None, why)
    import torch

    if not torch.cuda.is_available():
        return None, "no CUDA device is visible"
    return torch.cuda, None


def probe(device_type: str) -> dict:
    """What this process sees of one device type: names and memory per device, or why there is none. Opens a
    context on every device: run it in a subprocess (`python -m runner.devices TYPE`), never in a long-lived one."""
    mod, why = _accelerator(device_type)
    if mod is None:
        found = f"cpu ({cpu_model()})"
        try:
            import torch

            if torch.cuda.is_available():
                found += f", {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
        except Exception:  # noqa: BLE001 - torch itself fails to import where torch_npu lacks CANN
            pass
        return {"ok": False, "why": why, "found": found}
    names, free, total = [], [], []
    for i in range(mod.device_count()):
        mod.set_device(i)
        names.append(mod.get_device_name(i))
        f, t = mod.mem_get_info(i)
        free.append(int(f))
        total.append(int(t))
    return {"ok": True, "names": names, "free": free, "total": total, "found": found}


def probe_in_subprocess(device_type: str) -> dict:
    cmd = [sys.executable, "-m", "runner.devices", device_type]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise UserError(f"looking for {device_type} devices took over {PROBE_TIMEOUT_S} s (driver hung?)") from None
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"looking for {device_type} devices failed: {last}")
    return json.loads(lines[-1])


def _check_name(device_class: str, device_type: str, name: str) -> None:
    if classify(name) != device_class:
        kind = "GPU" if device_type == "cuda" else "NPU"
        raise UserError(f"--device {device_class} declared, but the {kind} is '{name}'")


def detect(device_class: str) -> Device:
    """The declared device class checked against this host, asked in a subprocess for accelerators."""
    dtype, backend = DEVICE_CLASSES[known(device_class)]
    if dtype == "cpu":
        available, total = host_memory()
        return Device(device_class, "cpu", cpu_model(), len(os.sched_getaffinity(0)), backend, (available,), (total,))
    seen = probe_in_subprocess(dtype)
    if not seen["ok"]:
        if dtype == "npu":
            raise UserError(f"--device {device_class} declared, but no Ascend NPU is usable: {seen['why']}")
        raise UserError(f"--device {device_class} declared, but {seen['why']}; found: {seen['found']}")
    _check_name(device_class, dtype, seen["names"][0])
    return Device(device_class, dtype, seen["names"][0], len(seen["names"]), backend, tuple(seen["free"]),
                  tuple(seen["total"]))


def bind(device_class: str, local_rank: int) -> Device:
    """In a tensor-parallel rank: set this rank's own device first, then ask about that device only."""
    dtype, backend = DEVICE_CLASSES[known(device_class)]
    if dtype == "cpu":
        return detect(device_class)
    mod, why = _accelerator(dtype)
    if mod is None:
        raise UserError(f"--device {device_class} declared, but no {dtype} device is usable: {why}")
    if local_rank >= mod.device_count():
        raise UserError(f"local rank {local_rank} has no device: this host shows {mod.device_count()} {dtype} device(s)")
    mod.set_device(local_rank)
    name = mod.get_device_name(local_rank)
    _check_name(device_class, dtype, name)
    return Device(device_class, dtype, name, mod.device_count(), backend)


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


if __name__ == "__main__":
    print(json.dumps(probe(sys.argv[1])))
