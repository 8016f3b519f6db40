"""Benchmark: batch-1 decode bandwidth utilisation of our timing loop against plain `model.generate`.

Demo model on this CPU; the peak is the measured copy bandwidth (runner.roofline). Both are measured in this one
process: our prefill + decode loop (runner.perf) and `model.generate` with EOS ignored, whose decode time is
generate(n tokens) - generate(1 token). Target: ours at least as high as generate's.

Run: .venv/bin/python -m bench.decode_bandwidth [--new-tokens 64] [--repeats 5]
"""
from __future__ import annotations

import argparse
import statistics
import time

from bench._report import write_section

# what this benchmark measures: a change to any of these makes its BENCHMARKS.md section stale (bench/status.py)
MEASURES = ["runner/perf.py", "runner/models.py", "runner/roofline.py"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    import torch
    from transformers.utils import logging

    from runner import models, perf, roofline
    from runner.spec import ModelSpec

    logging.disable_progress_bar()
    logging.set_verbosity_error()
    model, _tok = models.load(models.resolve(ModelSpec(name=models.DEMO)), "cpu", "float32")
    n, p = args.new_tokens, args.prompt_tokens
    peak = roofline.measured_cpu_bandwidth_gbps()
    per_step = roofline.decode_bytes_per_step(model, 1, p, n, 1)

    ours = perf.measure(model, "cpu", "cpu", batch_size=1, prompt_tokens=p, new_tokens=n, warmup=1,
                        repeats=args.repeats, seed=0)["decode_tokens_per_s"]["median"]

    ids = perf.synthetic_prompt(model.config.vocab_size, 1, p, 0, "cpu")

    def generate_s(tokens: int) -> float:
        t0 = time.perf_counter()
        with torch.inference_mode():
            model.generate(ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, temperature=None,
                           top_p=None, top_k=None, pad_token_id=0)
        return time.perf_counter() - t0

    generate_s(n)  # warm-up
    theirs = statistics.median((n - 1) / (generate_s(n) - generate_s(1)) for _ in range(args.repeats))
    rows = []
    for name, tps in (("ours: prefill + decode loop (runner.perf)", ours), ("`model.generate`", theirs)):
        gbps, util = roofline.achieved(per_step, tps, 1, peak)
        rows.append(f"| {name} | {tps:.2f} | {gbps:.2f} | {util:.1%} |")
    ratio = ours / theirs
    body = f"""Demo model, fp32, batch 1, {p}-token prompt, {n} new tokens, median of {args.repeats}; {per_step / 1e6:.0f} MB read per
decode step; peak = measured copy bandwidth of this CPU, {peak:.1f} GB/s.

| path | decode tokens/s | bandwidth (GB/s) | bandwidth util |
|---|---|---|---|
{chr(10).join(rows)}

**ours / generate: {ratio:.3f}** ({'meets' if ratio >= 1 else 'MISSES'} the target: ours at least as high)."""
    print(body)
    write_section("decode_bandwidth", "Batch-1 decode bandwidth utilisation: our loop vs model.generate", body)


if __name__ == "__main__":
    main()
