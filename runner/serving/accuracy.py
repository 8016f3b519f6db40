"""HumanEval through the endpoint: the job's [humaneval] problems as /v1/completions requests (its prompts, sampling,
stop strings and max_new_tokens), executed in our sandbox as the eager path executes its completions, so the served
model's accuracy lands in the same tables. A sample whose request failed counts as not passed, its reason kept.
"""
from __future__ import annotations

import time

from runner.humaneval import generation
from runner.serving import load, workload
from runner.serving.client import Outcome
from runner.spec import HumanEvalSpec, ServingSpec


async def run(send_one, s: ServingSpec, he: HumanEvalSpec, model: str, caps: dict, prompts: workload.Prompts,
              seed: int, concurrency: int, deadline: float) -> dict:
    """The run document's `humaneval` section. `send_one(payload, outcome)` streams one request."""
    # the tokenizer only for an instruct chat template: completion prompts are the problems' own text
    problems, jobs, texts = generation.samples(he, prompts.tokenizer)
    bodies = [workload.body(s, model, t, caps, max_tokens=he.max_new_tokens, seed=seed + i, force=False,
                            stop=he.stop, temperature=he.temperature, top_p=he.top_p) for i, t in enumerate(texts)]
    t0 = time.perf_counter()
    sent = await load.run_level(load.Level("concurrency", concurrency), len(jobs),
                                lambda i, o: send_one(bodies[i], o), deadline, seed)
    generation_s = time.perf_counter() - t0
    outcomes: list[Outcome | None] = sent.outcomes + [None] * sent.not_sent
    done = [i for i, o in enumerate(outcomes) if o is not None and o.reason is None]
    completions = {i: generation.extract_completion(outcomes[i].text, jobs[i], he.prompt_style, he.stop) for i in done}
    t0 = time.perf_counter()
    verdicts = dict(zip(done, generation.execute([(jobs[i], completions[i]) for i in done], he.timeout_s)))
    execution_s = time.perf_counter() - t0
    results = []
    for i, o in enumerate(outcomes):
        v = verdicts.get(i)
        why = "not sent: time limit" if o is None else f"not generated: {o.reason}: {o.example}"
        results.append({"completion": completions.get(i, ""), "passed": bool(v and v["passed"]),
                        "verdict": v["result"] if v else why,
                        "generated_tokens": workload_tokens(o, prompts) if v else None,
                        "generation_s": round(o.end - o.start, 4) if v else None,
                        "exec_s": round(v["exec_s"], 4) if v else None})
    return generation.record(he, problems, results, generation_s=generation_s, execution_s=execution_s)


def workload_tokens(o: Outcome, prompts: workload.Prompts) -> int:
    return o.output_tokens if o.output_tokens is not None else prompts.count(o.text)
