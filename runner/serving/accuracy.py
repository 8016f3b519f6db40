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
    from runner.humaneval.passk import pass_at_ks

    problems = generation.select_problems(he)
    jobs = [p for p in problems for _ in range(he.samples_per_problem)]
    texts = [generation.build_prompt(p, he.prompt_style, prompts.tokenizer) for p in jobs]
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
    results, counts = [], {}
    for i, problem in enumerate(jobs):
        o, v = outcomes[i], verdicts.get(i)
        why = "not sent: time limit" if o is None else f"not generated: {o.reason}: {o.example}"
        passed = bool(v and v["passed"])
        n, k = counts.get(problem["task_id"], (0, 0))
        counts[problem["task_id"]] = (n + 1, k + passed)
        results.append({"task_id": problem["task_id"], "sample": i % he.samples_per_problem,
                        "completion": completions.get(i, ""), "passed": passed,
                        "verdict": v["result"] if v else why,
                        "generated_tokens": workload_tokens(o, prompts) if v else None,
                        "generation_s": round(o.end - o.start, 4) if v else None,
                        "exec_s": round(v["exec_s"], 4) if v else None})
    return {"problems": len(problems), "samples_per_problem": he.samples_per_problem,
            "passed": sum(1 for _, k in counts.values() if k > 0), "pass_at_k": pass_at_ks(counts, he.k),
            "generation_s": round(generation_s, 3), "execution_s": round(execution_s, 3), "batch_agreement": None,
            "sandbox": generation.sandbox_protections(), "results": results}


def workload_tokens(o: Outcome, prompts: workload.Prompts) -> int:
    return o.output_tokens if o.output_tokens is not None else prompts.count(o.text)
