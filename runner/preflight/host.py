"""This host against the supported-stack table, and the disk the outbox and the model cache need.

Versions come from package metadata and the vendors' version files, so nothing here opens a device.
"""
from __future__ import annotations

import shutil
from importlib import metadata
from pathlib import Path

from packaging.version import InvalidVersion, Version

from runner.preflight import Check, stacks

OUTBOX_MIN_FREE = 1 << 30  # a run document with every HumanEval completion is a few MB; leave room for many


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _base(version: str) -> Version | None:
    """The release part of a version: 2.8.0+cpu and 2.8.0.post2 are 2.8.0."""
    try:
        return Version(Version(version).base_version)
    except InvalidVersion:
        return None


def installed() -> dict:
    """The versions that decide whether this host runs a supported stack."""
    from runner import environment

    return {"torch": _version("torch"), "transformers": _version("transformers"),
            "torch_npu": _version("torch-npu") or _version("torch_npu"), "cann": environment.cann_version(),
            "npu_driver": environment.npu_driver_version(), "nvidia_driver": environment.nvidia_driver_version(),
            "cuda": environment.torch_cuda_version()}


def _image_fix(device_type: str) -> str:
    img = stacks.IMAGES[device_type]
    install = f"pip install {img.torch_install}" if img.torch_install else f"use the base image {img.base_image}"
    return f"{install} (the image `docker compose build` makes for this host type)"


def check_stack(device_type: str, v: dict | None = None) -> list[Check]:
    """One check per rule of the table that applies to this device type; `v` defaults to what is installed."""
    v = installed() if v is None else v
    checks = []
    torch_v = _base(v["torch"]) if v["torch"] else None
    if torch_v is None or torch_v < Version(stacks.TORCH_MIN):
        checks.append(Check("torch", "fail", f"torch {v['torch'] or 'not installed'}: transformers needs torch >= "
                            f"{stacks.TORCH_MIN} (below it AutoModelForCausalLM is a placeholder)",
                            _image_fix(device_type)))
    else:
        checks.append(Check("torch", "ok", f"torch {v['torch']} (>= {stacks.TORCH_MIN})"))
    lo, hi = stacks.TRANSFORMERS
    tf = _base(v["transformers"]) if v["transformers"] else None
    if tf is None or not Version(lo) <= tf < Version(hi):
        checks.append(Check("transformers", "fail", f"transformers {v['transformers'] or 'not installed'} is outside "
                            f"the tested range >={lo},<{hi}", f"pip install '{stacks.requirements()['transformers']}'"))
    else:
        checks.append(Check("transformers", "ok", f"transformers {v['transformers']} (tested range >={lo},<{hi})"))
    if device_type == "cuda":
        checks.append(_cuda(v))
    elif device_type == "npu":
        checks.extend(_ascend(v))
    return checks


def _cuda(v: dict) -> Check:
    if not v["cuda"]:
        return Check("cuda", "fail", f"torch {v['torch']} is a CPU build", _image_fix("cuda"))
    needs, floor = stacks.cuda_driver_needed(v["cuda"])
    have = v["nvidia_driver"]
    what = f"torch built for CUDA {v['cuda']}, driver {have or 'unknown'}"
    if needs is None:
        return Check("cuda", "warn", f"{what}: CUDA {v['cuda']} is not in the table", _image_fix("cuda"))
    if have is None:
        return Check("cuda", "warn", f"{what}: nvidia-smi gave no driver version (CUDA {v['cuda']} needs {needs})")
    if _base(have) and _base(have) >= Version(needs):
        return Check("cuda", "ok", f"{what} (CUDA {v['cuda']} needs >= {needs})")
    if floor and _base(have) and _base(have) >= Version(floor):
        return Check("cuda", "warn", f"{what}: below {needs}, running on CUDA minor-version compatibility "
                     f"(floor {floor})", f"upgrade the driver to >= {needs}")
    return Check("cuda", "fail", f"{what}: CUDA {v['cuda']} needs driver >= {needs}",
                 f"upgrade the driver to >= {needs}, or use torch built for an older CUDA")


def _ascend(v: dict) -> list[Check]:
    pinned = stacks.IMAGE_ASCEND
    fix = (f"install CANN {pinned.cann}, then pip install torch=={pinned.torch} torch-npu=={pinned.torch_npu} "
           f"(or use the image: {stacks.IMAGES['npu'].base_image})")
    if not v["torch_npu"]:
        return [Check("torch-npu", "fail", "torch-npu is not installed", fix)]
    if not v["cann"]:
        return [Check("cann", "fail", f"torch-npu {v['torch_npu']} is installed but no CANN toolkit was found "
                      "(ASCEND_HOME_PATH, /usr/local/Ascend)", f"source CANN's set_env.sh, or {fix}")]
    rows = stacks.ascend_for(v["cann"])
    pairs = ", ".join(f"torch {s.torch} + torch-npu {s.torch_npu}" for s in rows)
    match = next((s for s in rows if s.torch_npu == v["torch_npu"]), None)
    stack = f"CANN {v['cann']} + torch {v['torch']} + torch-npu {v['torch_npu']}"
    if match is None:
        why = f"supported on CANN {v['cann']}: {pairs}" if rows else f"CANN {v['cann']} is not in the table"
        return [Check("ascend", "fail", f"{stack} is not a supported combination ({why})", fix)]
    if _base(v["torch"] or "") != _base(match.torch):
        return [Check("ascend", "fail", f"{stack}: torch-npu {match.torch_npu} runs with torch {match.torch}",
                      f"pip install torch=={match.torch}")]
    checks = [Check("ascend", "ok", f"{stack} (Ascend's compatibility table)")]
    driver = v["npu_driver"]
    if not match.drivers:
        checks.append(Check("npu-driver", "skip", f"driver {driver or 'unknown'}: no driver series published for "
                            f"CANN {match.cann}"))
    elif driver and any(driver.startswith(p) for p in match.drivers):
        checks.append(Check("npu-driver", "ok", f"driver {driver} (CANN {match.cann} ships with {match.drivers})"))
    else:
        checks.append(Check("npu-driver", "warn", f"driver {driver or 'unknown'}: CANN {match.cann} ships with "
                            f"Ascend HDK {' or '.join(match.drivers)}", "see Ascend's firmware and driver page"))
    return checks


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_disk(model_bytes: int | None = None, model_in_cache: bool = False) -> Check:
    """Free space where finished runs wait (the outbox) and where converted models go (the model cache)."""
    from runner import models
    from runner.fleet import outbox

    places = {"outbox": Path(outbox.directory()), "model cache": models.cache_dir()}
    free = {name: shutil.disk_usage(_nearest_existing(p)).free for name, p in places.items()}
    text = "; ".join(f"{name} {places[name]}: {free[name] / 1e9:.1f} GB free" for name in places)
    data = {"paths": {k: str(p) for k, p in places.items()}, "free_bytes": free}
    if free["outbox"] < OUTBOX_MIN_FREE:
        return Check("disk", "fail", f"{text}: the outbox needs {OUTBOX_MIN_FREE / 1e9:.1f} GB", "free space or set "
                     "DEVCOMPARE_OUTBOX to a larger disk", data)
    if model_in_cache and model_bytes and free["model cache"] < model_bytes:
        return Check("disk", "fail", f"{text}: the converted model needs {model_bytes / 1e9:.1f} GB",
                     "free space or set DEVCOMPARE_CACHE_DIR to a larger disk", data)
    return Check("disk", "ok", text, data=data)
