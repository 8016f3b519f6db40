"""Tensor parallel under torchrun on CPU (gloo): same greedy output as one process, sizes checked before launch,
a failing rank reported by number with nothing written and no rank left running; batched vs batch-1 agreement."""
from __future__ import annotations

import shutil
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from db.compare import token_agreement
from core import rundoc
from runner.cli import app

runner = CliRunner()
PERF_MIN = "[perf]\nbatch_sizes = [1]\nprompt_tokens = 8\nnew_tokens = 2\nwarmup = 0\nrepeats = 1\n"


def _job(tmp_path: Path, name: str, model: str, tp: int, problems: str, max_new: int, batch: int = 1,
         path: str | None = None) -> Path:
    job = tmp_path / f"{name}.toml"
    where = f'path = "{path}"\n' if path else ""
    job.write_text(f'name = "{name}"\n[model]\nname = "{model}"\n{where}tensor_parallel = {tp}\n{PERF_MIN}'
                   f'[humaneval]\nproblems = "{problems}"\nmax_new_tokens = {max_new}\nbatch_size = {batch}\n')
    return job


def _submit(job: Path, out: Path) -> dict:
    result = runner.invoke(app, ["submit", "--device", "cpu", "--job", str(job), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return rundoc.read(out)


def _completions(doc: dict) -> list[str]:
    return [r["completion"] for r in doc["humaneval"]["results"]]


def _no_rank_left():
    leftovers = [p for p in psutil.process_iter(["cmdline"]) if "runner.tp.rank" in " ".join(p.info["cmdline"] or [])]
    assert leftovers == []


def test_smoke_tp2_equals_tp1(tmp_path):
    one = _submit(_job(tmp_path, "s1", "tiny-random-llama", 1, "first:5", 24), tmp_path / "1.json")
    two = _submit(_job(tmp_path, "s2", "tiny-random-llama", 2, "first:5", 24), tmp_path / "2.json")
    assert two["device"]["count"] == 2 and two["environment"]["tensor_parallel_ranks"] == 2
    assert _completions(two) == _completions(one)
    assert token_agreement(one["token_probe"], two["token_probe"])["share"] == 1.0
    _no_rank_left()


@pytest.mark.slow
def test_demo_tp3_equals_tp1(tmp_path):
    """The demo model has 9 attention and 3 KV heads: 3 ranks work, and give the same greedy completions."""
    one = _submit(_job(tmp_path, "d1", "smollm2-135m-instruct", 1, "first:5", 40), tmp_path / "1.json")
    three = _submit(_job(tmp_path, "d3", "smollm2-135m-instruct", 3, "first:5", 40), tmp_path / "3.json")
    assert len(_completions(one)) == 5 and any(c.strip() for c in _completions(one))
    assert _completions(three) == _completions(one)
    _no_rank_left()


@pytest.mark.parametrize("model, size, sizes", [("smollm2-135m-instruct", 2, "1, 3"), ("tiny-random-llama", 3, "1, 2")])
def test_size_that_does_not_divide_heads_is_refused_before_launch(tmp_path, model, size, sizes):
    out = tmp_path / "run.json"
    result = runner.invoke(app, ["submit", "--device", "cpu", "--job",
                                 str(_job(tmp_path, "bad", model, size, "first:1", 4)), "--out", str(out)])
    assert result.exit_code == 2
    assert f"does not divide" in result.output and f"sizes that work: {sizes}" in result.output
    assert not out.exists()


def test_failing_rank_is_named_and_nothing_is_written(tmp_path):
    """Weights that fail to load (truncated safetensors) make the ranks fail: one line, the rank, no document."""
    from runner.models import SMOKE, resolve
    from runner.spec import ModelSpec

    broken = tmp_path / "broken-model"
    shutil.copytree(resolve(ModelSpec(name=SMOKE)), broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    out = tmp_path / "run.json"
    result = runner.invoke(app, ["submit", "--device", "cpu", "--job",
                                 str(_job(tmp_path, "broken", "x/y", 2, "first:1", 4, path=str(broken))),
                                 "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert "tensor-parallel run (2 ranks) failed: rank " in result.output and "failed first:" in result.output
    assert not out.exists() and not (tmp_path / "store.db").exists()
    _no_rank_left()


def test_batched_generation_agrees_with_batch_1(tmp_path):
    one = _submit(_job(tmp_path, "b1", "tiny-random-llama", 1, "first:6", 24, batch=1), tmp_path / "1.json")
    batched = _submit(_job(tmp_path, "b3", "tiny-random-llama", 1, "first:6", 24, batch=3), tmp_path / "3.json")
    agreement = batched["humaneval"]["batch_agreement"]
    assert agreement["batch_size"] == 3 and agreement["prompts"] == 6
    identical = sum(a == b for a, b in zip(_completions(one), _completions(batched)))
    assert agreement["identical"] == identical and agreement["share"] == identical / 6
    assert identical >= 5  # fp32 on the smoke model: padding may flip at most a near-tie
    assert one["humaneval"]["batch_agreement"] is None  # nothing to compare at batch 1


def test_token_agreement_reports_first_divergence():
    a = {"tasks": ["t0", "t1"], "tokens": [[1, 2, 3, 4], [5, 6, 7, 8]]}
    b = {"tasks": ["t0", "t1"], "tokens": [[1, 2, 3, 4], [5, 6, 0, 8]]}
    assert token_agreement(a, b) == {"share": 7 / 8, "tokens": 8, "first_divergence": {"task": "t1", "position": 2}}
    assert token_agreement(a, a)["first_divergence"] is None
    assert token_agreement(a, None) is None
    empty = {"tasks": ["t0"], "tokens": [[]]}
    assert token_agreement(empty, empty) is None  # no tokens: nothing to compare, not a share of 0/0


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_on_loopback_give_the_same_tokens_as_one_node(tmp_path):
    """TP 2 as two torchrun nodes of one rank each (static rendezvous on 127.0.0.1, gloo), each started by its own
    `runner submit`: node 0 writes the document, node 1 writes nothing, and the tokens are one node's."""
    import subprocess
    import sys

    job = _job(tmp_path, "n2", "tiny-random-llama", 2, "first:3", 16)
    one = _submit(job, tmp_path / "one.json")
    port, outs = _free_port(), [tmp_path / "node0.json", tmp_path / "node1.json"]
    procs = [subprocess.Popen([sys.executable, "-m", "runner.cli", "submit", "--device", "cpu", "--job", str(job),
                               "--nnodes", "2", "--node-rank", str(k), "--master-addr", "127.0.0.1",
                               "--master-port", str(port), "--out", str(outs[k])],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for k in (0, 1)]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    assert "node 1 of 2: its ranks finished" in logs[1] and not outs[1].exists()
    two = rundoc.read(outs[0])
    assert two["device"]["count"] == 2 and two["job"]["fingerprint"] == one["job"]["fingerprint"]
    assert _completions(two) == _completions(one)
    assert token_agreement(one["token_probe"], two["token_probe"])["share"] == 1.0
    assert [e["available"] for e in two["extra"]["energy"]] == [e["available"] for e in one["extra"]["energy"]]
    _no_rank_left()


def test_nodes_are_checked_before_any_rank_starts(tmp_path):
    job = _job(tmp_path, "n", "tiny-random-llama", 2, "first:1", 4)
    for args, fragment in ((["--nnodes", "2"], "--nnodes > 1 needs --master-addr"),
                           (["--nnodes", "2", "--node-rank", "2", "--master-addr", "h"], "--node-rank must be in 0..1"),
                           (["--nnodes", "4", "--master-addr", "h"], "does not split evenly over --nnodes 4")):
        result = runner.invoke(app, ["submit", "--device", "cpu", "--job", str(job), "--out", str(tmp_path / "x"),
                                     *args])
        assert result.exit_code == 2 and fragment in result.output, result.output


def test_a_rank_waits_two_hours_at_a_barrier():
    """The process group outlives rank 0's HumanEval execution: its timeout is not the 10-minute default."""
    import os

    import torch
    import torch.distributed as dist

    from runner import devices
    from runner.tp.rank import GROUP_TIMEOUT, init_group

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), RANK="0", WORLD_SIZE="1")
    try:
        init_group(devices.bind("cpu", 0))
        timeout = dist.distributed_c10d._get_default_group()._get_backend(torch.device("cpu")).options._timeout
        assert timeout == GROUP_TIMEOUT and GROUP_TIMEOUT.total_seconds() == 7200
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        for k in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE"):
            os.environ.pop(k, None)


def test_sharded_model_runs_without_inference_mode():
    """Under tensor parallel the weights are DTensors: model calls run under no_grad (inference_mode broke
    bias-free linears on DTensor before torch 2.6); one process keeps inference_mode."""
    import torch

    from runner import models
    from runner.spec import ModelSpec

    model, _ = models.load(models.resolve(ModelSpec(name=models.SMOKE)), "cpu", "float32")
    assert isinstance(models.inference(model), torch.inference_mode)
    assert models.sharding_kwargs(2).keys() <= {"distributed_config", "tp_plan"}


def test_agents_on_two_nodes_run_a_job_across_them(tmp_path):
    """Node 0's agent claims a TP 2 job and runs it with node 1's agent, one rank each, over the loopback."""
    from db import queue
    from db.engine import open_store
    from tests.fleet_support import LIGHT, jobs, spec, start_agent, stop_all, wait_for

    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    [job] = queue.enqueue(open_store(url), spec({**LIGHT, "model": {"name": "tiny-random-llama",
                                                                   "tensor_parallel": 2}}), ["cpu"])
    group = ["--nnodes", "2", "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), "--nproc-per-node", "1"]
    logs = [tmp_path / "node0.log", tmp_path / "node1.log"]
    follower = start_agent(url, tmp_path / "outbox1", logs[1], *group, "--node-rank", "1")
    leader = start_agent(url, tmp_path / "outbox0", logs[0], *group, "--node-rank", "0", "--once")
    try:
        assert leader.wait(timeout=600) == 0, logs[0].read_text()
        wait_for(lambda: "this node's ranks finished node 0's job" in logs[1].read_text(), 60,
                 "node 1 to report its ranks", follower, logs[1])
    finally:
        stop_all([follower, leader])
    [row] = jobs(url)
    assert (row.id, row.state) == (job, "done") and row.run_id
    from db.engine import session_scope
    from db.models import Run

    with session_scope(open_store(url)) as s:
        assert s.get(Run, row.run_id).device_count == 2
