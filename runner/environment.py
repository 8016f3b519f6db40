"""What a run's numbers depend on besides the job: host, library versions, accelerator stack, settings.

Captured once per run and stored with it, so the compare view can show an environment diff (torch, torch_npu, CANN,
driver, CUDA, transformers) next to a ratio that moved.
"""
from __future__ import annotations

import os
import platform
import re
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from runner.devices import Device, cpu_model

# Settings that change speed on Ascend or NVIDIA hosts (torch_npu and CUDA documentation); recorded when set.
SPEED_ENV_VARS = ("TASK_QUEUE_ENABLE", "CPU_AFFINITY_CONF", "ASCEND_LAUNCH_BLOCKING", "HCCL_BUFFSIZE",
                  "ASCEND_RT_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "TORCH_DEVICE_BACKEND_AUTOLOAD")
PROJECT_DIR = Path(__file__).resolve().parent.parent


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _run(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out or None


def git_commit() -> str | None:
    commit = _run(["git", "-C", str(PROJECT_DIR), "rev-parse", "HEAD"])
    if commit and _run(["git", "-C", str(PROJECT_DIR), "status", "--porcelain", "--untracked-files=no"]):
        commit += "-dirty"
    return commit


def _memory_bytes() -> int | None:
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except ImportError:
        return None


def cann_version() -> str | None:
    """CANN toolkit version from torch.version.cann (set once torch_npu is imported) or the toolkit's files."""
    import torch

    if getattr(torch.version, "cann", None):
        return torch.version.cann
    home = os.environ.get("ASCEND_HOME_PATH") or "/usr/local/Ascend/ascend-toolkit/latest"
    for info in sorted(Path(home).glob("*-linux/ascend_toolkit_install.info")) + [Path("/usr/local/Ascend/cann/version.cfg")]:
        try:
            m = re.search(r"version=([\w.]+)", info.read_text())
        except OSError:
            continue
        if m:
            return m.group(1)
    return None


def npu_driver_version() -> str | None:
    try:
        m = re.search(r"Version=([\w.]+)", Path("/usr/local/Ascend/driver/version.info").read_text())
    except OSError:
        return None
    return m.group(1) if m else None


def nvidia_driver_version() -> str | None:
    out = _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    return out.splitlines()[0].strip() if out else None


def torch_cuda_version() -> str | None:
    import torch

    return torch.version.cuda


def host(device: Device) -> dict:
    """This host as a run records it, without importing torch: library versions are the installed distributions',
    and what only a running torch knows (its CUDA runtime and threads, CANN through torch_npu) is None. A serving run
    records this: the engine, not this process, runs the model."""
    env = {
        "host": socket.gethostname(),
        "os": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_bytes": _memory_bytes(),
        "python": sys.version.split()[0],
        "torch": _version("torch"),
        "transformers": _version("transformers"),
        "torch_npu": None,
        "cann": None,
        "cuda": None,
        "driver": None,
        "project_commit": git_commit(),
        "settings": {k: os.environ[k] for k in SPEED_ENV_VARS if k in os.environ},
        "torch_threads": None,
    }
    if device.type == "cuda":
        env["driver"] = nvidia_driver_version()
    elif device.type == "npu":
        env["torch_npu"] = _version("torch-npu") or _version("torch_npu")
        env["driver"] = npu_driver_version()
    return env


def capture(device: Device) -> dict:
    """The host of a run that loads the model in this process: `host` plus what torch says of itself."""
    import torch

    env = {**host(device), "torch": torch.__version__, "cuda": torch.version.cuda,
           "torch_threads": torch.get_num_threads()}
    if device.type == "npu":
        env["cann"] = cann_version()
    return env
