"""One level's requests as the record a run document keeps: latency distributions (median, mean, p90, p99),
throughput, goodput under the job's SLOs, and the failures by reason.

Definitions follow vLLM's `bench serve` (and GenAI-Perf): TTFT from sending the request to the first chunk with
text; E2E to the end of the stream; TPOT = (E2E - TTFT) / (output tokens - 1) per request; ITL = every gap between
chunks with text (one chunk may carry several tokens). Throughputs divide by the level's wall time. Output tokens
come from the server's `usage` where it reports it, else from the model's tokenizer.
"""
from __future__ import annotations

from collections import Counter
from typing import Callable

import numpy as np

from runner.serving.client import Outcome
from runner.serving.load import LevelRun


def stat(values: list[float]) -> dict | None:
    if not values:
        return None
    a = np.asarray(values, dtype=float)
    median, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"median": round(float(median), 4), "mean": round(float(a.mean()), 4), "p90": round(float(p90), 4),
            "p99": round(float(p99), 4)}


def failures(outcomes: list[Outcome]) -> list[dict]:
    """Failed requests by reason, most frequent first, each with the first message seen."""
    failed = [o for o in outcomes if o.reason is not None]
    counts = Counter(o.reason for o in failed)
    example = {}
    for o in failed:
        example.setdefault(o.reason, o.example)
    return [{"reason": r, "count": n, "example": example[r]} for r, n in counts.most_common()]


def output_tokens(o: Outcome, count_tokens: Callable[[str], int]) -> tuple[int, str]:
    if o.output_tokens is not None:
        return o.output_tokens, "usage"
    return count_tokens(o.text), "tokenizer"


def summarize(run: LevelRun, *, asked_tokens: int, prompts: list[str], count_tokens: Callable[[str], int],
              slo_ttft_ms: float | None, slo_tpot_ms: float | None) -> dict:
    """The level's record. `prompts[i]` is request i's prompt, counted by `count_tokens` only where the server
    reports no usage (so a server that reports it needs no tokenizer here)."""
    ok = [(i, o) for i, o in enumerate(run.outcomes) if o.reason is None]
    counted = [output_tokens(o, count_tokens) for _, o in ok]
    ttft, tpot, e2e, itl, good = [], [], [], [], 0
    for (_, o), (n, _) in zip(ok, counted):
        e2e.append((o.end - o.start) * 1000)
        if o.first is None:  # finished without text: no first token to time
            continue
        ttft.append((o.first - o.start) * 1000)
        per_token = (o.end - o.first) * 1000 / (n - 1) if n > 1 else 0.0
        if n > 1:
            tpot.append(per_token)
        itl.extend((b - a) * 1000 for a, b in zip(o.chunks, o.chunks[1:]))
        good += ((slo_ttft_ms is None or ttft[-1] <= slo_ttft_ms) and (slo_tpot_ms is None or per_token <= slo_tpot_ms))
    out_total = sum(n for n, _ in counted)
    in_total = sum(o.prompt_tokens if o.prompt_tokens is not None else count_tokens(prompts[i]) for i, o in ok)
    sources = sorted({s for _, s in counted})
    seconds = run.seconds
    return {
        "mode": run.level.mode, "level": run.level.value, "requests": len(run.outcomes) + run.not_sent,
        "completed": len(ok), "failed_requests": len(run.outcomes) - len(ok), "not_sent": run.not_sent,
        "failures": failures(run.outcomes), "duration_s": round(seconds, 4),
        "input_tokens": in_total, "output_tokens": out_total,
        "token_source": sources[0] if len(sources) == 1 else ("mixed" if sources else None),
        # forcing the length (ignore_eos / min_tokens) is what makes two hosts' numbers comparable: how often it held
        "exact_output_share": round(sum(n == asked_tokens for n, _ in counted) / len(ok), 4) if ok else None,
        "serving_ttft_ms": stat(ttft), "serving_tpot_ms": stat(tpot), "serving_itl_ms": stat(itl),
        "serving_e2e_ms": stat(e2e),
        "request_throughput": round(len(ok) / seconds, 4), "output_throughput": round(out_total / seconds, 4),
        "goodput": round(good / seconds, 4) if slo_ttft_ms is not None or slo_tpot_ms is not None else None,
        "raw": {"ttft_ms": [round(x, 3) for x in ttft], "tpot_ms": [round(x, 3) for x in tpot],
                "e2e_ms": [round(x, 3) for x in e2e], "output_tokens": [n for n, _ in counted]},
    }
