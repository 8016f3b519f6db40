"""Energy per token: the readers of npu-smi and NVML output, RAPL's wrapping counter, the sampler's integration, the
per-token figures, and on this host (no power meter) a record that says "not available" and why, never a zero."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from runner import devices, power

# `npu-smi info -t power -i 0 -c 0` on a 910B-class chip, as npu-smi prints it ("\t%-30s : %.1f")
NPU_SMI_910B = """\tNPU ID                         : 0
\tChip ID                        : 0
\tNPU Real-time Power(W)         : 93.6
"""
# older 910 boards name the same reading differently
NPU_SMI_910 = "\tNPU ID                         : 2\n\tChip Count                     : 1\n\n\tPower Dissipation(W)           : 71.7\n"
# a 310's figure is its rating, not a reading
NPU_SMI_310 = "\tNPU ID                         : 0\n\tRated Power Dissipation(W)     : 8.0\n"
# `npu-smi info -m`: chip logic ids (torch_npu's numbering) against npu-smi's NPU and chip ids; Mcu rows have none
NPU_SMI_MAP = """        NPU ID                         Chip ID                        Chip Logic ID                  Chip Name
        0                              0                              0                              Ascend 910B3
        0                              1                              -                              Mcu
        1                              0                              1                              Ascend 910B3
        4                              0                              2                              Ascend 910B3
"""


def test_npu_smi_power_readings():
    assert power.parse_npu_smi_power(NPU_SMI_910B) == 93.6
    assert power.parse_npu_smi_power(NPU_SMI_910) == 71.7
    assert power.parse_npu_smi_power(NPU_SMI_310) is None
    assert power.parse_npu_smi_power("Error: device not found") is None


def test_npu_smi_chip_mapping():
    assert power.parse_npu_smi_mapping(NPU_SMI_MAP) == {0: (0, 0), 1: (1, 0), 2: (4, 0)}


def test_nvml_units():
    # nvmlDeviceGetTotalEnergyConsumption counts mJ since the driver loaded; nvmlDeviceGetPowerUsage reports mW
    assert power.nvml_energy_joules(5_316_944_212) == pytest.approx(5_316_944.212)
    assert power.nvml_power_watts(287_441) == pytest.approx(287.441)


def test_rapl_counter_wraps_at_its_range():
    assert power.rapl_joules([1_000_000, 3_500_000], 262_143_328_850) == pytest.approx(2.5)
    assert power.rapl_joules([262_143_000_000, 500_000], 262_143_328_850) == pytest.approx(0.82885)


def _meter(kind: str, value) -> power.Meter:
    """A meter whose readings are a known function of time: what the sampler makes of them is checked exactly."""
    t0 = time.perf_counter()
    return power.Meter(f"known {kind}", kind, lambda: value(time.perf_counter() - t0), 0.01)


@pytest.mark.parametrize("kind, value", [("power", lambda t: 200.0), ("energy", lambda t: 200.0 * t + 1e6)])
def test_sampler_integrates_power_and_differences_energy(kind, value):
    with power.Sampler(_meter(kind, value)) as s:
        t0 = time.perf_counter()
        time.sleep(0.3)
        t1 = time.perf_counter()
    assert s.joules(t0, t1) == pytest.approx(200.0 * (t1 - t0), rel=0.05)
    assert 0.009 < s.interval_s < 0.05


def test_per_token_figures_sum_ranks_and_refuse_short_phases():
    a = {"source": "nvml energy counter", "reason": None, "shared": False, "interval_s": 0.05,
         "first_token_j": 6.0, "decode_j": 310.0, "first_token_s": 0.08, "decode_s": 3.1}
    rec = power.per_token([a, dict(a)], batch_size=2, repeats=5, new_tokens=32)
    assert rec["available"] and rec["devices"] == 2
    assert rec["decode_j_per_token"] == pytest.approx(620.0 / (2 * 5 * 31))
    assert rec["tokens_per_joule"] == pytest.approx(2 * 5 * 31 / 620.0)
    assert rec["first_token_j_per_token"] is None and "under two sampling intervals" in rec["why"]["first_token"]
    shared = power.per_token([{**a, "source": "rapl"}, {**a, "source": "rapl", "shared": True}], 2, 5, 32)
    assert shared["devices"] == 1 and shared["decode_j_per_token"] == pytest.approx(310.0 / 310)
    none = power.per_token([a, {"source": None, "reason": "npu-smi is not on PATH", "shared": False}], 2, 5, 32)
    assert none == {"batch_size": 2, "available": False, "reason": "npu-smi is not on PATH"}


@pytest.mark.skipif(Path("/sys/class/powercap").exists(), reason="this host has a powercap driver")
def test_no_meter_on_this_host_says_why():
    meter, why = power.meter_for("cpu")
    assert meter is None and "/sys/class/powercap does not exist" in why


def test_measure_records_energy_or_the_reason_never_a_zero():
    from runner import perf
    from runner.models import SMOKE, load, resolve
    from runner.spec import ModelSpec

    model, _ = load(resolve(ModelSpec(name=SMOKE)), "cpu", "float32")
    rec = perf.measure(model, "cpu", "cpu", batch_size=1, prompt_tokens=8, new_tokens=4, warmup=0, repeats=2,
                       seed=0, meter=power.meter_for("cpu"))
    energy = rec["energy"]
    if energy["available"]:
        assert energy["tokens_per_joule"] is None or energy["tokens_per_joule"] > 0
    else:
        assert energy["reason"] and "tokens_per_joule" not in energy


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
def test_nvml_meter_reads_the_gpu():
    meter, why = power.meter_for("cuda", 0)
    assert meter is not None, why
    assert meter.read() > 0


@pytest.mark.npu
@pytest.mark.skipif(devices.import_torch_npu()[0] is None, reason="needs an Ascend NPU with CANN and torch_npu")
def test_npu_smi_meter_reads_the_npu():
    meter, why = power.meter_for("npu", 0)
    assert meter is not None, why
    assert meter.read() > 0


def test_run_documents_refuse_a_zero_or_an_unexplained_absence():
    from core import rundoc
    from core.errors import UserError

    doc = rundoc.new_document(device={"class": "cpu", "type": "cpu", "name": "x", "count": 1}, environment={},
                              job_name="j", fingerprint="0" * 16, spec={}, started_at=rundoc.now())
    doc["extra"] = {"energy": [{"batch_size": 1, "available": False, "reason": "no RAPL"}]}
    rundoc.validate(doc)
    for bad in ({"batch_size": 1, "available": False}, {"batch_size": 1, "available": True, "tokens_per_joule": 0}):
        doc["extra"]["energy"] = [bad]
        with pytest.raises(UserError, match="extra/energy/0"):
            rundoc.validate(doc)
