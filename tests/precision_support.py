"""What the precision tests share: a precision pass that also keeps the full layer outputs it hooked (for the exact
errors the sketches estimate), a small Llama whose heads divide by 3, and a tensor-parallel worker.

As a script under torchrun it is that worker: it loads the model sharded over the ranks and, on rank 0, saves the
pass over PROMPTS ([precision] prompts) and the full outputs for each dtype (a pickle):
    python -m runner.tp.launch --standalone --nproc_per_node=3 tests/precision_support.py MODEL_DIR OUT first:1 \
        float32 bfloat16
"""
from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path

import numpy as np

from runner import precision
from runner.spec import PrecisionSpec

TINY = dict(vocab_size=258, hidden_size=96, intermediate_size=192, num_hidden_layers=4, num_attention_heads=6,
            num_key_value_heads=3, max_position_embeddings=4096, bos_token_id=256, eos_token_id=257,
            pad_token_id=257, tie_word_embeddings=False)  # 6 attention / 3 KV heads: TP 1 or 3


def build_tiny(out: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    LlamaForCausalLM(LlamaConfig(**TINY)).save_pretrained(out)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(out)
    return out


def capture_with_outputs(model, tokenizer, spec: PrecisionSpec, device: str = "cpu") -> tuple[dict, dict]:
    """(the precision section, {layer: every prompt's output, flattened, float64 numpy}) from one pass."""
    kept: dict[str, list] = {}
    hooked = precision.layer_outputs

    def keep(*args, **kwargs):
        for index, count, outputs in hooked(*args, **kwargs):
            for name, x in outputs.items():
                kept.setdefault(name, []).append(x.double().reshape(-1).cpu().numpy())
            yield index, count, outputs

    precision.layer_outputs = keep
    try:
        section = precision.capture(model, tokenizer, spec, device)
    finally:
        precision.layer_outputs = hooked
    return section, {name: np.concatenate(parts) for name, parts in kept.items()}


def exact_errors(a: dict, b: dict) -> dict[str, float]:
    """||a - b|| / ||b|| per layer, from the full outputs."""
    return {name: float(np.linalg.norm(a[name] - b[name]) / np.linalg.norm(b[name])) for name in b}


def _worker(model_dir: str, out: str, prompts: str, dtypes: list[str]) -> None:
    import torch
    import torch.distributed as dist

    from runner import models

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    results = {}
    for dtype in dtypes:
        model, tok = models.load(Path(model_dir), "cpu", dtype, world=int(os.environ["WORLD_SIZE"]))
        results[dtype] = capture_with_outputs(model, tok, PrecisionSpec(prompts=prompts))
    if dist.get_rank() == 0:
        Path(out).write_bytes(pickle.dumps(results))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:])
