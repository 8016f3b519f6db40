"""Serving mode: measure an engine (vLLM, vllm-ascend, MindIE, SGLang, TGI, `transformers serve`) through its
OpenAI-compatible endpoint, as `runner submit --endpoint URL` does for a job with a [serving] section.

In order, all under the job's time limit: what the server says about itself and which request fields it accepts
(client.py); warm-up requests, not measured; each concurrency level and request rate (load.py) with its record
(summary.py); then the job's [humaneval] problems through the endpoint (accuracy.py). The run document carries the
levels in `serving`, the accuracy in `humaneval` like an eager run's, and the server's self-description in
`environment.server`.
"""
from __future__ import annotations

import asyncio
import time

from rich.console import Console

from core import rundoc
from core.errors import RunError, UserError
from core.metrics import METRICS
from runner import environment
from runner.serving import accuracy, client, load, summary, workload
from runner.spec import DEFAULT_STOP, JobSpec

DESCRIBE_TIMEOUT_S = 10.0


def run(spec: JobSpec, device, endpoint: str | None, *, model_path: str | None = None,
        console: Console | None = None) -> dict:
    """Measure the job against the server at `endpoint`; returns the validated run document."""
    from runner import models

    if spec.serving is None:
        raise UserError(f"job {spec.name!r} has no [serving] section: --endpoint measures serving jobs "
                        "(example: jobs/serving-demo.toml)")
    if endpoint is None:
        raise UserError(f"job {spec.name!r} is a serving job: pass --endpoint URL of the running engine "
                        "(or start one with `runner serve`)")
    console = console or Console(stderr=True)
    client.base_url(endpoint)  # a malformed URL fails before the tokenizer loads
    prompts = workload.Prompts(spec.serving, workload.Tokenizer(models.resolve(spec.model, model_path)), spec.seed)
    started = rundoc.now()
    measured = asyncio.run(measure(spec, endpoint, prompts, console))
    doc = rundoc.new_document(
        device={"class": device.device_class, "type": device.type, "name": device.name,
                "count": spec.model.tensor_parallel},
        environment=environment.host(device), job_name=spec.name, fingerprint=spec.fingerprint,
        spec=spec.to_dict(), started_at=started)
    doc["environment"]["server"] = measured.pop("server")
    doc["humaneval"] = measured.pop("humaneval")
    doc["serving"] = measured
    doc["finished_at"] = rundoc.now()
    return rundoc.validate(doc)


async def measure(spec: JobSpec, endpoint: str, prompts: workload.Prompts, console: Console) -> dict:
    """Probe, warm up, run every level, then HumanEval; {"server", "humaneval", and the `serving` section}."""
    s, he = spec.serving, spec.humaneval
    t0 = time.perf_counter()
    deadline = t0 + s.time_limit_s
    in_flight = max([*s.concurrency, 1]) if not s.rates else max([*s.concurrency, s.requests])
    async with client.new_client(endpoint, in_flight) as http:
        def left() -> float:
            return max(0.001, min(s.request_timeout_s, deadline - time.perf_counter()))

        server = await client.describe(http, s.engine.name, min(DESCRIBE_TIMEOUT_S, left()))
        model = client.served_model(server, s.served_model, spec.model.name)
        caps = await client.capabilities(http, model, he.stop if he else DEFAULT_STOP, left())
        console.print(f"server {server['endpoint']}: model {model}; accepts " +
                      ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in caps.items()), highlight=False)

        async def send(payload: dict, o: client.Outcome) -> client.Outcome:
            return await client.stream(http, payload, o, s.request_timeout_s)

        async def level_run(level: load.Level, n: int, key: str) -> tuple[load.LevelRun, list[str]]:
            texts = prompts.make(n, key)
            bodies = [workload.body(s, model, t, caps, max_tokens=s.output_tokens, seed=spec.seed + i)
                      for i, t in enumerate(texts)]
            return await load.run_level(level, n, lambda i, o: send(bodies[i], o), deadline, spec.seed), texts

        warm, _ = await level_run(load.Level("concurrency", 1), s.warmup, "warm-up")
        records = []
        for level in load.levels(s.concurrency, s.rates):
            r, texts = await level_run(level, s.requests, level.label)
            records.append(summary.summarize(r, asked_tokens=s.output_tokens, prompts=texts, count_tokens=prompts.count,
                                             slo_ttft_ms=s.slo_ttft_ms, slo_tpot_ms=s.slo_tpot_ms))
            console.print(describe_level(level, records[-1]), highlight=False)
        if not any(r["completed"] for r in records):
            raise RunError(nothing_worked(server["endpoint"], records))
        accuracy_record = None
        if he is not None:
            console.print(f"HumanEval through the endpoint ({he.problems}, {he.samples_per_problem} sample(s) each)",
                          highlight=False)
            accuracy_record = await accuracy.run(send, s, he, model, caps, prompts,
                                                 spec.seed, max([*s.concurrency, 1]), deadline)
    return {"server": server, "humaneval": accuracy_record, "api": client.COMPLETIONS, "model": model,
            "capabilities": caps, "warmup": {"requests": s.warmup, "failed": sum(o.reason is not None
                                                                               for o in warm.outcomes)},
            "levels": records, "seconds": round(time.perf_counter() - t0, 3)}


def describe_level(level: load.Level, rec: dict) -> str:
    def median(name: str) -> str:
        return METRICS[name].format((rec[name] or {}).get("median"))

    failed = f", {rec['failed_requests']} failed" if rec["failed_requests"] else ""
    unsent = f", {rec['not_sent']} not sent" if rec["not_sent"] else ""
    return (f"{level.label}: {rec['completed']}/{rec['requests']} completed{failed}{unsent}; median TTFT "
            f"{median('serving_ttft_ms')} ms, TPOT {median('serving_tpot_ms')} ms; "
            f"{METRICS['output_throughput'].format(rec['output_throughput'])} output tokens/s")


def nothing_worked(endpoint: str, records: list[dict]) -> str:
    reasons: dict[str, int] = {}
    for rec in records:
        for f in rec["failures"]:
            reasons[f["reason"]] = reasons.get(f["reason"], 0) + f["count"]
    sent = sum(rec["requests"] - rec["not_sent"] for rec in records)
    why = ", ".join(f"{r} x{n}" for r, n in sorted(reasons.items(), key=lambda kv: -kv[1])) or "none sent in time"
    return f"no request succeeded against {endpoint} ({sent} sent): {why}"
