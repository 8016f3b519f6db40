"""Devices, roofline and contention: the CPU path everywhere; the CUDA and NPU paths only where the hardware is
(skipped, visibly, elsewhere)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from runner import devices, perf, roofline
from core.errors import UserError
from runner.models import SMOKE, load, resolve
from runner.spec import ModelSpec

REPO = Path(__file__).resolve().parent.parent
HAS_CUDA = torch.cuda.is_available()
HAS_NPU = devices.import_torch_npu()[0] is not None


def test_cpu_detect():
    d = devices.detect("cpu")
    assert (d.type, d.backend, d.torch_device()) == ("cpu", "gloo", "cpu")
    assert d.name and d.count >= 1


def test_unknown_device_lists_known_ones():
    with pytest.raises(UserError, match="known: cpu, A100, H100, H20, H200, 910B3, 910B4"):
        devices.detect("V100")


# (detected name, device class, peak GB/s): the names torch reports on the hosts these comparisons run on
NAMES = [
    ("NVIDIA A100-SXM4-40GB", "A100", 1555), ("NVIDIA A100-SXM4-80GB", "A100", 2039),
    ("NVIDIA A100-PCIE-40GB", "A100", 1555), ("NVIDIA A100 80GB PCIe", "A100", 1935),
    ("NVIDIA A100-PCIE-80GB", "A100", 1935), ("NVIDIA A800-SXM4-80GB", "A100", 2039),
    ("NVIDIA A800 80GB PCIe", "A100", 1935), ("NVIDIA H100 80GB HBM3", "H100", 3350), ("NVIDIA H100 PCIe", "H100", 2000),
    ("NVIDIA H100 NVL", "H100", 3900), ("NVIDIA H800", "H100", 3350), ("NVIDIA H800 PCIe", "H100", 2000),
    ("NVIDIA H20", "H20", 4000), ("NVIDIA H200", "H200", 4800), ("NVIDIA H200 NVL", "H200", 4800),
    ("Ascend910B3", "910B3", 1600), ("ascend910b3", "910B3", 1600), ("Ascend910B4", "910B4", 800),
    ("ASCEND910B4", "910B4", 800),
]


@pytest.mark.parametrize("name, device_class, gbps", NAMES)
def test_device_names_map_to_their_class_and_peak(name, device_class, gbps):
    assert devices.classify(name) == device_class
    assert roofline.known_peak(name).bandwidth_gbps == gbps


@pytest.mark.parametrize("name", ["NVIDIA GeForce RTX 4090", "Tesla V100-SXM2-32GB", "Ascend910B", "NVIDIA A10", None])
def test_other_devices_have_no_class(name):
    assert devices.classify(name) is None and roofline.known_peak(name) is None


def test_parent_detects_in_a_subprocess_and_holds_no_device():
    """`runner submit` and the agent ask in a short subprocess: this process never initialises CUDA or torch_npu."""
    import torch

    if HAS_CUDA:
        pytest.skip("a CUDA device is present: the probe's answer is checked by test_cuda_path")
    with pytest.raises(UserError, match="no CUDA device is visible; found: cpu"):
        devices.detect("A100")
    assert not torch.cuda.is_initialized()
    seen = devices.probe_in_subprocess("cuda")
    assert seen["ok"] is False and seen["why"] == "no CUDA device is visible"


def test_a_rank_binds_on_cpu_without_a_device_context():
    d = devices.bind("cpu", 1)
    assert (d.type, d.backend, d.torch_device(1)) == ("cpu", "gloo", "cpu") and d.free_bytes[0] > 0


@pytest.mark.skipif(HAS_NPU, reason="an NPU is present")
def test_missing_npu_stack_is_a_clear_error():
    with pytest.raises(UserError) as e:
        devices.detect("910B3")
    assert "no Ascend NPU is usable" in str(e.value) and "\n" not in str(e.value)


def test_decode_bytes_and_utilisation():
    """A decode step reads every weight but the input embedding, of which it reads one row per sequence."""
    model, _ = load(resolve(ModelSpec(name=SMOKE)), "cpu", "float32")
    cfg = model.config
    embedding = cfg.vocab_size * cfg.hidden_size * 4
    weights = sum(p.numel() for p in model.parameters()) * 4 - embedding + 2 * cfg.hidden_size * 4
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    kv = cfg.num_hidden_layers * 2 * cfg.num_key_value_heads * head_dim * (16 + 8 / 2) * 2 * 4
    assert roofline.decode_bytes_per_step(model, 2, 16, 8, 1) == pytest.approx(weights + kv)
    gbps, util = roofline.achieved(1e9, 20.0, 2, 40.0)  # 10 steps/s x 1 GB
    assert (gbps, util) == (pytest.approx(10.0), pytest.approx(0.25))
    assert roofline.measured_cpu_bandwidth_gbps(megabytes=32, repeats=2) > 0.1


def test_contention_is_flagged_when_other_processes_burn_cpu():
    model, _ = load(resolve(ModelSpec(name=SMOKE)), "cpu", "float32")
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        rec = perf.measure(model, "cpu", "cpu", batch_size=1, prompt_tokens=16, new_tokens=32, warmup=1, repeats=5,
                           seed=0)
    finally:
        for b in burners:
            b.kill()
            b.wait()
    assert rec["cpu_other_cores"] > perf.CONTENTION_THRESHOLD and rec["cpu_contention"] is True


def _accelerator_smoke(device_class: str, tmp_path):
    from typer.testing import CliRunner

    from core import rundoc
    from runner.cli import app

    out = tmp_path / "run.json"
    result = CliRunner().invoke(app, ["submit", "--device", device_class, "--job", str(REPO / "jobs/smoke.toml"),
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    doc = rundoc.read(out)
    rec = doc["perf"][0]
    assert rec["peak_memory_bytes"] > 0 and rec["bandwidth_util"] is not None
    assert 0 < rec["ttft_ms"]["median"] < rec["e2e_ms"]["median"]
    return doc


def _cuda_class() -> str | None:
    return devices.classify(torch.cuda.get_device_name(0)) if HAS_CUDA else None


@pytest.mark.cuda
@pytest.mark.skipif(_cuda_class() is None, reason="needs an NVIDIA A100/A800, H100/H800, H20 or H200")
def test_cuda_path(tmp_path):
    cls = _cuda_class()
    d = devices.detect(cls)
    assert d.type == "cuda" and d.backend == "nccl" and devices.classify(d.name) == cls  # an A800 is classed A100
    doc = _accelerator_smoke(cls, tmp_path)
    assert doc["environment"]["cuda"] and doc["environment"]["driver"]


@pytest.mark.npu
@pytest.mark.skipif(not HAS_NPU, reason="needs an Ascend NPU with CANN and torch_npu")
def test_npu_path(tmp_path):
    cls = devices.classify(torch.npu.get_device_name(0))
    d = devices.detect(cls)
    assert d.type == "npu" and d.backend == "hccl"
    doc = _accelerator_smoke(cls, tmp_path)
    assert doc["environment"]["torch_npu"]
