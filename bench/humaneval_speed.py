"""Benchmark: batched HumanEval generation against the reference workflow's one-prompt-at-a-time loop.

Demo model, the first 40 HumanEval problems, at most 128 new tokens, greedy, same stop sequences on both sides.
Both paths run in this one process, one after the other, so the ratio is measured side by side.
Target (issue 3): ours at least 4x faster in wall time with at least 95% identical completions.

Run: .venv/bin/python -m bench.humaneval_speed [--problems 40] [--batch-size 16]
"""
from __future__ import annotations

import argparse
import time

from bench._report import write_section


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    args = ap.parse_args()

    import torch
    from transformers.utils import logging

    from runner import humaneval, models
    from runner.spec import HumanEvalSpec, ModelSpec

    logging.disable_progress_bar()
    logging.set_verbosity_error()
    spec = HumanEvalSpec(problems=f"first:{args.problems}", max_new_tokens=args.max_new_tokens,
                         batch_size=args.batch_size)
    model, tok = models.load(models.resolve(ModelSpec(name=models.DEMO)), "cpu", "float32")
    problems = humaneval.select_problems(spec)
    prompts = [p["prompt"] for p in problems]

    # the reference workflow: model.generate on one prompt at a time
    t0 = time.perf_counter()
    reference = []
    for prompt in prompts:
        enc = tok(prompt, return_tensors="pt")
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=spec.max_new_tokens, do_sample=False, temperature=None,
                                 top_p=None, top_k=None, stop_strings=spec.stop, tokenizer=tok,
                                 pad_token_id=tok.pad_token_id)
        reference.append(tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True))
    reference_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    ours = humaneval.generate(model, tok, prompts, spec, "cpu", seed=1234)
    ours_s = time.perf_counter() - t0

    ref_c = [humaneval.extract_completion(t, p, "completion", spec.stop) for t, p in zip(reference, problems)]
    our_c = [humaneval.extract_completion(o["text"], p, "completion", spec.stop) for o, p in zip(ours, problems)]
    identical = sum(a == b for a, b in zip(ref_c, our_c)) / len(problems)
    speedup = reference_s / ours_s
    verdict = "meets" if speedup >= 4 and identical >= 0.95 else "MISSES"
    body = f"""Demo model (SmolLM2-135M-Instruct, fp32, CPU, {torch.get_num_threads()} threads), first {args.problems} HumanEval problems,
max {args.max_new_tokens} new tokens, greedy, same stop sequences. Target: >= 4x faster, >= 95% identical completions.

| path | wall time (s) | completions identical to reference |
|---|---|---|
| reference: `model.generate`, one prompt at a time | {reference_s:.1f} | - |
| ours: batched (batch {args.batch_size}, left padding, length-sorted) | {ours_s:.1f} | {identical:.1%} |

**Speed-up: {speedup:.2f}x** ({verdict} the target)."""
    print(body)
    write_section("humaneval_speed", "HumanEval generation: batched vs one prompt at a time", body)


if __name__ == "__main__":
    main()
