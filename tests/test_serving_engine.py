"""Serving mode against a real engine on this CPU: `transformers serve` with the demo model on 127.0.0.1 (the
`serving` extra of transformers), started and stopped by the tests, few requests and short outputs."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from core import rundoc
from core.metrics import SERVING
from runner import devices, models, serving
from runner.cli import app
from runner.humaneval import generation
from runner.serving import engine
from runner.spec import parse_spec

pytestmark = pytest.mark.slow
SERVED_TASKS = ["HumanEval/0", "HumanEval/2"]  # the demo model writes text for these (others stop at once)


def test_runner_serve_measures_transformers_serve_at_concurrency_1_2_4(tmp_path):
    job = tmp_path / "serving.toml"
    job.write_text('name = "serving-cpu-test"\nhumaneval = false\n[model]\nname = "smollm2-135m-instruct"\n'
                   "[serving]\nrequests = 4\ninput_tokens = 16\noutput_tokens = 3\nconcurrency = [1, 2, 4]\n"
                   "slo_ttft_ms = 60000\nslo_tpot_ms = 60000\ntime_limit_s = 600\n"
                   '[serving.engine]\nname = "transformers"\n')
    out = tmp_path / "run.json"
    result = CliRunner().invoke(app, ["serve", "--device", "cpu", "--job", str(job), "--out", str(out),
                                      "--startup-timeout", "300"])
    assert result.exit_code == 0, result.output
    doc = rundoc.read(out)
    caps = doc["serving"]["capabilities"]
    # transformers serve refuses vLLM's length extensions with 422 and reports usage when asked
    assert (caps["ignore_eos"], caps["min_tokens"], caps["stream_options"], caps["usage_in_stream"]) == (
        False, False, True, True)
    assert doc["environment"]["server"]["declared_engine"] == "transformers"
    assert doc["environment"]["server"]["models"] == [doc["serving"]["model"]]
    assert [lv["level"] for lv in doc["serving"]["levels"]] == [1, 2, 4]
    for lv in doc["serving"]["levels"]:
        assert (lv["completed"], lv["failed_requests"]) == (4, 0), lv["failures"]
        assert lv["token_source"] == "usage" and lv["exact_output_share"] is not None
        missing = [m.name for m in SERVING if lv[m.name] is None]
        assert not missing, (lv["level"], missing)


def test_humaneval_through_the_endpoint_matches_the_eager_path():
    spec = parse_spec({"name": "agreement", "model": {"name": "smollm2-135m-instruct"},
                       "humaneval": {"problems": SERVED_TASKS, "max_new_tokens": 16},
                       "serving": {"concurrency": [1], "requests": 1, "input_tokens": 8, "output_tokens": 2,
                                   "warmup": 0, "time_limit_s": 600, "engine": {"name": "transformers"}}})
    model_dir = models.resolve(spec.model)
    port = engine.free_port()
    url = f"http://127.0.0.1:{port}"
    with engine.running(engine.command(spec, model_dir, "127.0.0.1", port, "cpu"), url, 300):
        doc = serving.run(spec, devices.detect("cpu"), url)
    served = [r["completion"] for r in doc["humaneval"]["results"]]
    model, tok = models.load(model_dir, "cpu", spec.model.dtype)
    problems = generation.select_problems(spec.humaneval)
    outs = generation.generate(model, tok, [p["prompt"] for p in problems], spec.humaneval, "cpu", spec.seed,
                               batch_size=1)
    eager = [generation.extract_completion(o["text"], p, "completion", spec.humaneval.stop)
             for o, p in zip(outs, problems)]
    share = sum(a == b for a, b in zip(served, eager)) / len(eager)
    print(json.dumps({"identical_share": share, "served": served, "eager": eager}))
    assert all(served) and share == 1.0  # greedy, same dtype, stop strings honoured: the same completions
    assert doc["humaneval"]["problems"] == 2 and len(doc["humaneval"]["results"]) == 2
