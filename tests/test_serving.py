"""Serving mode against a stub OpenAI server on loopback (runner/serving/stub.py): every metric at every level, what a
strict server accepts, failures counted with their reasons, the time limit, one-line errors, the store, the tables and
`runner serve`. The real engine (`transformers serve`) is in test_serving_engine.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from core import rundoc
from core.metrics import SERVING
from runner import devices, serving
from runner.cli import app
from runner.serving import engine, load
from runner.serving.stub import Stub, serve_in_thread
from runner.spec import fingerprint, parse_spec

cli = CliRunner()
LEVELS = {"concurrency": [1, 2, 4], "rates": [200.0]}


def job(**serving_keys) -> dict:
    section = {"requests": 6, "input_tokens": 16, "output_tokens": 5, **LEVELS, "warmup": 1, "slo_ttft_ms": 1000.0,
               "slo_tpot_ms": 1000.0, "request_timeout_s": 1.0, "time_limit_s": 30.0, **serving_keys}
    return {"name": "serve-test", "humaneval": None, "model": {"name": "tiny-random-llama"}, "serving": section}


def toml(data: dict) -> str:
    lines = [f'name = "{data["name"]}"', "humaneval = false", "[model]", f'name = "{data["model"]["name"]}"',
             "[serving]"]
    for key, value in data["serving"].items():
        if isinstance(value, dict):
            continue
        lines.append(f"{key} = {json.dumps(value)}")
    for key, value in data["serving"].get("engine", {}).items():
        lines += ["[serving.engine]"] if "[serving.engine]" not in lines else []
        lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


@pytest.fixture
def stub():
    stops = []

    def start(*plan: str, strict: bool = False, gap_s: float = 0.0) -> str:
        url, stop = serve_in_thread(Stub(plan or ("ok",), gap_s, strict))
        stops.append(stop)
        return url
    yield start
    for stop in stops:
        stop()


def measure(url: str, **serving_keys) -> dict:
    return serving.run(parse_spec(job(**serving_keys)), devices.detect("cpu"), url)


def test_every_metric_at_every_level_and_the_document_validates(stub):
    doc = measure(stub())
    rundoc.validate(doc)
    assert doc["format"] == "devcompare.run/2" and doc["perf"] == [] and doc["humaneval"] is None
    levels = doc["serving"]["levels"]
    assert [(lv["mode"], lv["level"]) for lv in levels] == [("concurrency", 1), ("concurrency", 2),
                                                          ("concurrency", 4), ("rate", 200.0)]
    for lv in levels:
        assert (lv["completed"], lv["failed_requests"], lv["not_sent"]) == (6, 0, 0)
        for m in SERVING:
            assert lv[m.name] is not None, (lv["mode"], lv["level"], m.name)
            if m.quantiles:
                assert set(lv[m.name]) == {"median", "mean", "p90", "p99"}
        assert lv["token_source"] == "usage" and lv["output_tokens"] == 6 * 5 and lv["exact_output_share"] == 1.0
        assert lv["goodput"] == pytest.approx(lv["request_throughput"])  # generous SLOs: every request counts
    caps = doc["serving"]["capabilities"]
    assert caps == {"stream_options": True, "ignore_eos": True, "min_tokens": True, "stop": True,
                    "usage_in_stream": True}
    server = doc["environment"]["server"]
    assert server["models"] == ["stub-model"] and server["version"] == {"version": "stub"}
    assert doc["serving"]["model"] == "stub-model" and doc["serving"]["warmup"] == {"requests": 1, "failed": 0}


def test_a_strict_server_is_sent_only_what_it_accepts(stub):
    doc = measure(stub(strict=True), warmup=0)
    caps = doc["serving"]["capabilities"]
    assert (caps["ignore_eos"], caps["min_tokens"], caps["stream_options"]) == (False, False, True)
    assert all(lv["failed_requests"] == 0 for lv in doc["serving"]["levels"])  # no 422 for a field it refuses
    assert doc["serving"]["warmup"] == {"requests": 0, "failed": 0}


def test_failures_are_counted_with_their_reasons(stub):
    t0 = time.perf_counter()
    doc = measure(stub("ok", "500", "cut", "hang"), concurrency=[1, 4], rates=[])
    assert time.perf_counter() - t0 < 15  # a hung request costs its request_timeout_s, never more
    for lv in doc["serving"]["levels"]:
        reasons = {f["reason"]: f for f in lv["failures"]}
        assert set(reasons) == {"HTTP 500", "stream cut", "timeout"}
        assert lv["failed_requests"] == sum(f["count"] for f in lv["failures"]) == lv["requests"] - lv["completed"]
        assert "planned failure" in reasons["HTTP 500"]["example"]
        assert "1 s" in reasons["timeout"]["example"]
        assert lv["completed"] >= 1 and lv["serving_ttft_ms"] is not None  # the successes are still measured


def test_the_time_limit_stops_a_hung_server(stub):
    t0 = time.perf_counter()
    doc = measure(stub("ok", "ok", "hang"), request_timeout_s=60.0, time_limit_s=3.0)
    assert time.perf_counter() - t0 < 6
    first, *rest = doc["serving"]["levels"]
    assert first["completed"] == 1 and first["failures"][0]["reason"] == "time limit"
    assert first["not_sent"] == 4
    assert all(lv["not_sent"] == lv["requests"] for lv in rest)  # levels after the limit are recorded, not sent


def test_poisson_arrivals_are_seeded():
    a = load.arrivals(4.0, 2000, seed=7)
    assert a == load.arrivals(4.0, 2000, seed=7) != load.arrivals(4.0, 2000, seed=8)
    assert a[0] == 0 and a[-1] / (len(a) - 1) == pytest.approx(0.25, rel=0.1)


def _submit(tmp_path, data: dict, *extra: str):
    path = tmp_path / "job.toml"
    path.write_text(toml(data))
    return cli.invoke(app, ["submit", "--device", "cpu", "--job", str(path), *extra])


def test_connection_refused_is_one_line_exit_1(tmp_path):
    url = f"http://127.0.0.1:{engine.free_port()}"
    result = _submit(tmp_path, job(), "--endpoint", url, "--out", str(tmp_path / "run.json"))
    assert result.exit_code == 1, result.output
    assert "cannot reach the server" in result.output and "connection refused" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "run.json").exists()


def test_a_server_where_nothing_works_is_one_line_exit_1(tmp_path, stub):
    result = _submit(tmp_path, job(), "--endpoint", stub("500"), "--out", str(tmp_path / "run.json"))
    assert result.exit_code == 1
    assert "no request succeeded" in result.output and "HTTP 500 x" in result.output
    assert "Traceback" not in result.output


def test_serving_job_and_endpoint_go_together(tmp_path, stub):
    result = _submit(tmp_path, job())  # no --endpoint
    assert result.exit_code == 2 and "is a serving job: pass --endpoint URL" in result.output
    path = tmp_path / "eager.toml"
    path.write_text('name = "eager"\nhumaneval = false\n[model]\nname = "tiny-random-llama"\n')
    result = cli.invoke(app, ["submit", "--device", "cpu", "--job", str(path), "--endpoint", stub()])
    assert result.exit_code == 2 and "has no [serving] section" in result.output


def test_submit_endpoint_imports_neither_torch_nor_transformers(tmp_path, stub):
    """A client of a remote engine loads no model: the whole `runner submit --endpoint` (measure, push, tables) in a
    fresh process, which reports at exit what it imported."""
    path = tmp_path / "job.toml"
    path.write_text(toml(job()))
    probe = ("import atexit, sys; atexit.register(lambda: print('imported:', [m for m in ('torch', 'transformers') "
             "if m in sys.modules], file=sys.stderr)); from runner.cli import app; app()")
    done = subprocess.run([sys.executable, "-c", probe, "submit", "--device", "cpu", "--job", str(path),
                           "--endpoint", stub()], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "DEVCOMPARE_DB_URL": f"sqlite:///{tmp_path / 'store.db'}"})
    assert done.returncode == 0, done.stderr
    assert "pushed run" in done.stderr and "| concurrency 4 |" in done.stdout
    assert "imported: []" in done.stderr, done.stderr[-2000:]


def test_pushed_runs_compare_per_level_in_every_format(tmp_path, stub, store_url):
    from db import store
    from db.engine import open_store

    cpu = measure(stub())
    other = json.loads(json.dumps(cpu)) | {"run_id": "00000000-0000-4000-8000-000000000001"}
    other["device"] = {**other["device"], "class": "A100", "type": "cuda", "name": "NVIDIA A100-SXM4-80GB"}
    for lv in other["serving"]["levels"]:
        lv["serving_ttft_ms"]["median"] = cpu["serving"]["levels"][0]["serving_ttft_ms"]["median"] * 2
    eng = open_store(store_url)
    assert store.push(eng, cpu) and store.push(eng, other) and not store.push(eng, other)
    args = ["compare", "--candidate", "cpu", "--baseline", "A100", "--fingerprint", cpu["job"]["fingerprint"],
            "--db", store_url]
    md = cli.invoke(app, args)
    assert md.exit_code == 0, md.output
    assert "**Serving** (cpu: unspecified (version stub); A100: unspecified (version stub))" in md.output
    for label in ("concurrency 1", "concurrency 2", "concurrency 4", "200 req/s"):
        assert f"| {label} | cpu |" in md.output and f"| {label} | ratio |" in md.output
    csv_out = cli.invoke(app, [*args, "--format", "csv"]).output
    assert "concurrency 4,A100," in csv_out
    data = json.loads(cli.invoke(app, [*args, "--format", "json"]).output)
    levels = data["serving"]["levels"]
    assert len(levels) == 4 and data["serving"]["candidate_run"] == cpu["run_id"]
    ttft = levels[0]["serving_ttft_ms"]
    assert ttft["ratio"] == pytest.approx(ttft["candidate"] / ttft["baseline"]) and set(ttft["p99"]) == {
        "candidate", "baseline"}


def test_fingerprint_covers_the_workload_not_the_host():
    base = parse_spec(job())
    assert fingerprint(base) == fingerprint(parse_spec(job(time_limit_s=5.0, request_timeout_s=9.0,
                                                           served_model="x", concurrency=[4, 2, 1])))
    assert fingerprint(base) == fingerprint(parse_spec(job(engine={"command": "vllm serve {model}"})))
    for change in ({"output_tokens": 6}, {"concurrency": [1, 2]}, {"engine": {"name": "vllm"}},
                   {"engine": {"settings": ["--max-num-seqs=8"]}}, {"slo_ttft_ms": 10.0}, {"workload": "humaneval"}):
        assert fingerprint(parse_spec(job(**change))) != fingerprint(base), change


@pytest.mark.parametrize("change, fragment", [
    ({"workload": "chat"}, "serving.workload"), ({"concurrency": [], "rates": []}, "give the levels"),
    ({"concurrency": [0]}, "integers >= 1"), ({"rates": [-1.0]}, "numbers > 0"),
    ({"concurrency": [2, 2]}, "must not repeat"), ({"output_tokens": 1}, "at least 2"),
    ({"time_limit_s": 0}, "serving.time_limit_s: must be > 0"), ({"requests": 0}, "serving.requests: must be >= 1"),
    ({"engine": {"name": " "}}, "serving.engine.name"), ({"colour": 1}, "unknown key 'serving.colour'"),
])
def test_bad_serving_sections_are_one_line_errors(change, fragment):
    from core.errors import UserError

    with pytest.raises(UserError, match=fragment.replace("[", r"\[")):
        parse_spec(job(**change))


def test_runner_serve_starts_the_jobs_command_and_stops_it(tmp_path):
    data = job(engine={"name": "stub", "command": "python -m runner.serving.stub --host {host} --port {port}"})
    path = tmp_path / "job.toml"
    path.write_text(toml(data))
    out = tmp_path / "run.json"
    result = cli.invoke(app, ["serve", "--device", "cpu", "--job", str(path), "--out", str(out),
                              "--startup-timeout", "30"])
    assert result.exit_code == 0, result.output
    assert "stopped stub" in result.output
    assert [lv["completed"] for lv in rundoc.read(out)["serving"]["levels"]] == [6, 6, 6, 6]


def test_runner_serve_names_a_missing_engine_or_its_early_exit(tmp_path):
    path = tmp_path / "job.toml"
    path.write_text(toml(job(engine={"name": "vllm"})))
    result = cli.invoke(app, ["serve", "--device", "cpu", "--job", str(path)])
    if engine.shutil.which("vllm") is None:
        assert result.exit_code == 2 and "the engine is not installed: `vllm` not found (pip install vllm" in \
            result.output
    path.write_text(toml(job(engine={"name": "x", "command": "python -c 'import sys; print(42); sys.exit(3)'"})))
    result = cli.invoke(app, ["serve", "--device", "cpu", "--job", str(path), "--startup-timeout", "30"])
    assert result.exit_code == 1 and "exited with code 3 before answering: 42" in result.output


def one_line_error(result, code: int, fragment: str) -> None:
    assert result.exit_code == code, result.output
    assert fragment in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("endpoint, fragment", [
    ("http://[::1", "not a valid URL (Invalid IPv6 URL)"), ("http://127.0.0.1:abc", "Port could not be cast"),
    ("http://127.0.0.1:99999", "Port out of range 0-65535"), ("ftp://x", "http:// or https://"),
    ("http://:8000", "names no server"),
])
def test_a_malformed_endpoint_is_one_line_exit_2(tmp_path, endpoint, fragment):
    result = _submit(tmp_path, job(), "--endpoint", endpoint, "--out", str(tmp_path / "run.json"))
    one_line_error(result, 2, fragment)


def test_socket_errors_are_a_counted_failure_or_one_line(tmp_path):
    """Past the URL check (a client built by hand), a port out of range fails inside the socket layer: a request
    counts it as a failure, describing the server is a one-line error."""
    import asyncio

    import httpx2

    from core.errors import RunError
    from runner.serving import client

    async def both():
        async with httpx2.AsyncClient(base_url="http://127.0.0.1:99999", trust_env=False) as http:
            o = await client.stream(http, {"prompt": "x"}, client.Outcome(start=time.perf_counter()), 5.0)
            with pytest.raises(RunError, match="cannot reach the server at http://127.0.0.1:99999: transport error"):
                await client.describe(http, "x", 5.0)
        return o
    o = asyncio.run(both())
    assert o.reason == "transport error" and "OverflowError" in o.example and o.end is not None


def test_a_server_that_is_not_openai_compatible_is_named_with_its_status(tmp_path):
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        result = _submit(tmp_path, job(), "--endpoint", url, "--out", str(tmp_path / "run.json"))
    finally:
        server.shutdown()
        server.server_close()
    assert result.exit_code == 1, result.output
    assert f"{url}/v1/models answered HTTP 404: is {url} an OpenAI-compatible server?" in result.output
    assert "lists 0 models" not in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("args, fragment", [
    (["--host", "no such host"], "--host 'no such host': the engine cannot listen there"),
    (["--host", "nosuch.invalid", "--port", "8000"], "--host 'nosuch.invalid'"),
    (["--format", "xml"], "--format must be markdown, csv or json, not 'xml'"),
])
def test_runner_serve_checks_its_options_before_starting_the_engine(tmp_path, args, fragment):
    path = tmp_path / "job.toml"
    started = tmp_path / "started"
    path.write_text(toml(job(engine={"name": "x", "command": f"touch {started}"})))
    result = cli.invoke(app, ["serve", "--device", "cpu", "--job", str(path), *args])
    one_line_error(result, 2, fragment)
    assert not started.exists()
    for port in ("99999", "-5"):
        result = cli.invoke(app, ["serve", "--device", "cpu", "--job", str(path), "--port", port])
        assert result.exit_code == 2 and "Invalid value for '--port'" in result.output and not started.exists()
