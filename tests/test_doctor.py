"""`runner doctor` and the memory-fit refusal: the 34B job on this CPU host, the smoke job with a real gloo
all-reduce, the stack rules on recorded version sets, the fit arithmetic against a loaded model."""
from __future__ import annotations

import json
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from core.errors import UserError
from runner import devices, models
from runner.cli import app
from runner.preflight import fit, host, stacks
from runner.spec import ModelSpec, load_spec

REPO = Path(__file__).resolve().parent.parent
runner = CliRunner()
CODELLAMA = REPO / "jobs" / "codellama-34b-instruct.toml"


def test_34b_job_does_not_fit_this_host_in_one_line_with_the_numbers():
    result = runner.invoke(app, ["doctor", "--device", "cpu", "--job", str(CODELLAMA), "--no-collective"])
    assert result.exit_code == 1, result.output
    [line] = [x for x in result.output.splitlines() if "FAIL  memory fit" in x]
    assert "float16 at TP 2 needs" in line and "weights 33.7 GB" in line and "does not fit" in line
    assert "GB available" in line and "fix: no tensor-parallel size fits this host" in result.output
    lo, hi = stacks.TRANSFORMERS
    assert "supported stacks (cpu)" in result.output and f">={lo},<{hi}" in result.output


def test_34b_job_sizes_per_rank_as_json():
    result = runner.invoke(app, ["doctor", "--device", "cpu", "--job", str(CODELLAMA), "--no-collective",
                                 "--format", "json"])
    assert result.exit_code == 1
    report = json.loads(result.output)
    sizes = {f["tensor_parallel"]: f for f in report["memory_fit"]}
    assert sorted(sizes) == [1, 2, 4, 8]  # 64 attention and 8 KV heads
    assert sizes[2]["weights_bytes"] == pytest.approx(33.7e9, rel=0.01)  # 33.74 B parameters in fp16, halved
    assert sizes[2]["per_rank_bytes"] > sizes[2]["weights_bytes"] + sizes[2]["kv_bytes"]  # plus headroom
    assert sizes[2]["need_bytes"] == 2 * sizes[2]["per_rank_bytes"]  # both ranks share this host's memory
    assert psutil.virtual_memory().total < sizes[2]["need_bytes"] and not sizes[2]["fits"]
    fit_check = next(c for c in report["checks"] if c["name"] == "memory fit")
    assert fit_check["status"] == "fail" and report["ok"] is False


def test_submit_refuses_the_34b_job_before_any_rank_starts(tmp_path):
    out = tmp_path / "run.json"
    result = runner.invoke(app, ["submit", "--device", "cpu", "--job", str(CODELLAMA), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "at TP 2 needs" in result.output and "does not fit" in result.output
    assert "no tensor-parallel size fits this host (TP 1 needs" in result.output
    assert not out.exists()
    assert not [p for p in psutil.process_iter(["cmdline"]) if "runner.tp.rank" in " ".join(p.info["cmdline"] or [])]


def test_smoke_job_at_tp2_passes_with_a_gloo_all_reduce(tmp_path):
    job = tmp_path / "smoke2.toml"
    job.write_text((REPO / "jobs" / "smoke.toml").read_text().replace("tensor_parallel = 1", "tensor_parallel = 2"))
    result = runner.invoke(app, ["doctor", "--device", "cpu", "--job", str(job), "--format", "json"])
    report = json.loads(result.output)
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["collective"]["status"] == "ok" and checks["collective"]["backend"] == "gloo"
    assert checks["collective"]["ranks"] == 2 and checks["collective"]["busbw_gbps"] > 0
    assert checks["memory fit"]["status"] == "ok" and checks["disk"]["status"] == "ok"
    assert result.exit_code == (0 if report["ok"] else 1)


def test_unknown_device_and_bad_format_are_one_line_exit_2():
    for args, fragment in ((["doctor", "--device", "TPUv9"], "unknown device 'TPUv9'"),
                           (["doctor", "--device", "cpu", "--format", "xml"], "--format must be text or json")):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and fragment in result.output and "Traceback" not in result.output


def test_fit_counts_the_weights_a_loaded_model_holds():
    """TP 1's weight figure is the loaded smoke model's parameter bytes; at TP 2 the sharded layers count half."""
    model, _ = models.load(models.resolve(ModelSpec(name=models.SMOKE)), "cpu", "float32")
    loaded = sum(p.numel() * p.element_size() for p in model.parameters())
    sharded, replicated = fit.weight_split(model.config, "float32")
    assert sharded + replicated == loaded and sharded > 0
    spec = load_spec(REPO / "jobs" / "smoke.toml")
    one, two = fit.fits(model.config, spec, devices.detect("cpu"), (1 << 40,))
    assert one.weights_bytes == loaded and two.weights_bytes == sharded // 2 + replicated
    assert two.kv_bytes * 2 == one.kv_bytes and one.fits and two.fits


def test_fit_on_accelerators_needs_each_device_in_use_to_have_room():
    """The arithmetic with free memory as the device probe reports it: 80 GB A100s, 32 GB 910B4s."""
    spec = load_spec(CODELLAMA)
    config = models.config_for(spec.model)
    a100 = devices.Device("A100", "cuda", "NVIDIA A100-SXM4-80GB", 2, "nccl")
    sizes = {f.tensor_parallel: f for f in fit.fits(config, spec, a100, (84e9, 84e9))}
    assert sizes[1].fits and sizes[2].fits  # 67.5 GB of fp16 weights fit one 80 GB card, with headroom
    assert not sizes[4].fits and sizes[4].why == "4 ranks per host, 2 device(s) here"
    b4 = devices.Device("910B4", "npu", "Ascend910B4", 8, "hccl")
    eight = fit.fits(config, spec, b4, (33.5e9,) * 8)
    assert [f.fits for f in eight] == [False, False, True, True]
    assert fit.alternatives(eight) == "sizes that fit: 4, 8 (smallest: TP 4)"
    assert not fit.fits(config, spec, b4, (33.5e9,) * 3 + (10e9,) * 5)[2].fits  # rank 3's device is short


def test_a_model_without_config_or_path_cannot_be_sized():
    with pytest.raises(UserError, match="model .org/unknown. is not a known alias.*--model-path DIR"):
        models.config_for(ModelSpec(name="org/unknown"))


VERSIONS = {"torch": "2.8.0", "transformers": "5.24.0", "torch_npu": None, "cann": None, "npu_driver": None,
            "nvidia_driver": None, "cuda": None}


def _status(device_type: str, **v) -> dict[str, tuple[str, str]]:
    return {c.name: (c.status, c.summary + " " + (c.fix or "")) for c in host.check_stack(device_type, {**VERSIONS, **v})}


def test_stack_rules_on_recorded_version_sets():
    assert _status("cpu") == {"torch": ("ok", _status("cpu")["torch"][1]),
                              "transformers": ("ok", _status("cpu")["transformers"][1])}
    # the shipped images before: torch 2.5.1, and transformers resolved to the newest release
    old = _status("cpu", torch="2.5.1", transformers="5.30.0")
    assert old["torch"][0] == "fail" and "placeholder" in old["torch"][1]
    assert old["transformers"][0] == "fail" and "pip install 'transformers>=5.24,<5.25'" in old["transformers"][1]
    assert _status("cuda", torch="2.8.0+cpu")["cuda"][0] == "fail"
    assert _status("cuda", cuda="12.8", nvidia_driver="570.133.20")["cuda"][0] == "ok"
    assert _status("cuda", cuda="12.8", nvidia_driver="535.183.01")["cuda"][0] == "warn"  # minor-version compat
    assert _status("cuda", cuda="12.8", nvidia_driver="470.256.02")["cuda"][0] == "fail"
    # the Ascend image before: CANN 8.0.0 with torch-npu 2.5.1, which Ascend's table does not pair
    bad = _status("npu", torch="2.5.1", torch_npu="2.5.1", cann="8.0.0", npu_driver="24.1.rc3")
    assert bad["ascend"][0] == "fail" and "not in the table" in bad["ascend"][1]
    assert "install CANN 8.3.RC1, then pip install torch==2.8.0 torch-npu==2.8.0" in bad["ascend"][1]
    wrong_pair = _status("npu", torch="2.8.0", torch_npu="2.6.0", cann="8.3.RC1")
    assert wrong_pair["ascend"][0] == "fail" and "torch 2.8.0 + torch-npu 2.8.0" in wrong_pair["ascend"][1]
    good = _status("npu", torch="2.8.0", torch_npu="2.8.0", cann="8.3.RC1", npu_driver="25.2.0")
    assert good["ascend"][0] == "ok" and good["npu-driver"][0] == "ok"
    assert _status("npu", torch="2.6.0", torch_npu="2.6.0.post3", cann="8.3.RC1.1")["ascend"][0] == "ok"
    assert _status("npu", torch_npu="2.8.0", cann=None)["cann"][0] == "fail"


def test_agent_refuses_a_job_that_cannot_fit_before_any_rank_starts(tmp_path):
    from db import queue
    from db.engine import open_store
    from runner.fleet.agent import Agent
    from tests.fleet_support import jobs

    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    engine = open_store(url)
    [job] = queue.enqueue(engine, load_spec(CODELLAMA), ["cpu"], max_attempts=1)
    assert Agent(engine, devices.detect("cpu"), outbox_dir=tmp_path / "outbox", once=True).serve() == 0
    [row] = jobs(url)
    assert row.id == job and row.state == "failed" and row.run_id is None
    assert "at TP 2 needs" in row.error and "no tensor-parallel size fits this host" in row.error
