"""The supported stacks: which driver, CANN or CUDA, torch, torch-npu and transformers go together.

This table is the one place the pins live. pyproject's torch and transformers requirements, the Dockerfile's build
arguments and docker-compose's agent images are written from it, and tests/test_compose.py fails when they drift
apart. `runner doctor` checks a host against it and prints it.

- transformers: the range this project is tested with; releases from 4.56 on require torch >= 2.6 and, below it,
  disable their torch classes (AutoModelForCausalLM and DynamicCache become placeholders).
- Ascend: the torch-npu wheel that goes with each torch on each CANN release, from Ascend's compatibility table
  (Ascend/pytorch, "版本配套"), rows with torch >= 2.6 only; the driver (Ascend HDK) series each CANN release
  ships with, where Ascend's release notes name one.
- CUDA: any torch >= 2.6 built for CUDA, on a driver at least the one its CUDA release needs; CUDA's minor-version
  compatibility runs a 12.x runtime on older 12.x drivers, with a warning.
"""
from __future__ import annotations

from dataclasses import dataclass

TORCH_MIN = "2.6"
TRANSFORMERS = ("5.24", "5.25")  # tested: >= the first, < the second


@dataclass(frozen=True)
class AscendStack:
    cann: str
    torch: str
    torch_npu: str  # the wheel's version: torch-npu==2.6.0.post3
    drivers: tuple[str, ...]  # Ascend HDK version prefixes released with this CANN; () = not published


ASCEND: tuple[AscendStack, ...] = (
    AscendStack("8.2.RC1", "2.6.0", "2.6.0", ("25.2",)),
    AscendStack("8.3.RC1", "2.6.0", "2.6.0.post3", ("25.",)),
    AscendStack("8.3.RC1", "2.7.1", "2.7.1", ("25.",)),
    AscendStack("8.3.RC1", "2.8.0", "2.8.0", ("25.",)),
    AscendStack("8.5.0", "2.6.0", "2.6.0.post5", ("25.5",)),
    AscendStack("8.5.0", "2.7.1", "2.7.1.post2", ("25.5",)),
    AscendStack("8.5.0", "2.8.0", "2.8.0.post2", ("25.5",)),
    AscendStack("8.5.0", "2.9.0", "2.9.0", ("25.5",)),
    AscendStack("9.0.0", "2.7.1", "2.7.1.post4", ("25.5", "26.0")),
    AscendStack("9.0.0", "2.8.0", "2.8.0.post4", ("25.5", "26.0")),
    AscendStack("9.0.0", "2.9.0", "2.9.0.post2", ("25.5", "26.0")),
    AscendStack("9.0.0", "2.10.0", "2.10.0", ("25.5", "26.0")),
)
# CUDA runtime -> the Linux driver its release needs (CUDA release notes, "CUDA Toolkit and Corresponding Driver
# Versions"); the floor below which even minor-version compatibility does not run it.
CUDA_DRIVERS: dict[str, str] = {"12.4": "550.54.14", "12.6": "560.28.03", "12.8": "570.26", "12.9": "575.51.03",
                                "13.0": "580.65.06"}
CUDA_COMPAT_FLOOR: dict[str, str] = {"12": "525.60.13", "13": "580.65.06"}

# What the images install: one torch on every host type, so both sides of a comparison run the same framework.
IMAGE_TORCH = "2.8.0"
IMAGE_CUDA = "12.8"
IMAGE_ASCEND = next(s for s in ASCEND if s.cann == "8.3.RC1" and s.torch == IMAGE_TORCH)
CPU_WHEELS = "https://download.pytorch.org/whl/cpu"


@dataclass(frozen=True)
class Image:
    base_image: str
    torch_install: str  # pip arguments for the Dockerfile's TORCH_INSTALL; "" when the base image brings torch


IMAGES: dict[str, Image] = {
    "cpu": Image("python:3.11-slim", f"torch=={IMAGE_TORCH} --index-url {CPU_WHEELS}"),
    "cuda": Image(f"pytorch/pytorch:{IMAGE_TORCH}-cuda{IMAGE_CUDA}-cudnn9-runtime", ""),
    # torch's x86 wheel on PyPI is a CUDA build, which torch-npu refuses: the CPU index supplies torch
    "npu": Image(f"ascendai/cann:{IMAGE_ASCEND.cann.lower()}-910b-ubuntu22.04-py3.11",
                 f"torch=={IMAGE_ASCEND.torch} torch-npu=={IMAGE_ASCEND.torch_npu} --extra-index-url {CPU_WHEELS}"),
}
# Where a stack has actually run this project's tests; rows not named here are taken from the vendors' tables.
VERIFIED: tuple[str, ...] = ("cpu: torch 2.13.0 + transformers 5.24.0 (the test suite, gloo tensor parallel)",)


def requirements() -> dict[str, str]:
    """pyproject's requirement strings for the pinned packages."""
    lo, hi = TRANSFORMERS
    return {"torch": f"torch>={TORCH_MIN}", "transformers": f"transformers>={lo},<{hi}"}


def ascend_for(cann: str | None) -> list[AscendStack]:
    """The supported rows for a CANN version ("8.3.RC1"; patch releases such as 8.3.RC1.1 count as 8.3.RC1)."""
    if not cann:
        return []
    wanted = cann.upper()
    return [s for s in ASCEND if wanted == s.cann.upper() or wanted.startswith(s.cann.upper() + ".")]


def cuda_driver_needed(cuda: str | None) -> tuple[str | None, str | None]:
    """(the driver the CUDA release needs, the minor-version-compatibility floor) for a runtime such as "12.8"."""
    if not cuda:
        return None, None
    major_minor = ".".join(cuda.split(".")[:2])
    return CUDA_DRIVERS.get(major_minor), CUDA_COMPAT_FLOOR.get(cuda.split(".")[0])


def rows(device_type: str) -> list[list[str]]:
    """The table as printed for one device type: header first."""
    lo, hi = TRANSFORMERS
    tf = f">={lo},<{hi}"
    if device_type == "npu":
        return [["CANN", "torch", "torch-npu", "driver (Ascend HDK)", "transformers"]] + [
            [s.cann, s.torch, s.torch_npu, " or ".join(d + "x" if d.endswith(".") else d + ".x" for d in s.drivers)
             or "see Ascend", tf] for s in ASCEND]
    if device_type == "cuda":
        return [["CUDA", "torch", "driver (needs)", "driver (compat floor)", "transformers"]] + [
            [cuda, f">={TORCH_MIN} built for CUDA {cuda}", drv, CUDA_COMPAT_FLOOR[cuda.split('.')[0]], tf]
            for cuda, drv in CUDA_DRIVERS.items()]
    return [["torch", "transformers"], [f">={TORCH_MIN}", tf]]


def markdown(device_type: str) -> str:
    """The table for one device type as the README shows it (a test keeps the README in step)."""
    table = rows(device_type)
    lines = ["| " + " | ".join(table[0]) + " |", "|" + "---|" * len(table[0])]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in table[1:]])
