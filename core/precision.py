"""Per-layer precision across hosts: the sketch every host draws alike, the run document's `precision` section, and
the comparison of two runs' sections (numpy only; runner.precision captures the tensors).

Each watched layer's output over the fixed prompts is one matrix x: a row per token (the prompts' tokens one after
another), a column per unit. A run keeps x's exact statistics and a count sketch S x of `size` buckets: element
(t, u) is added with sign s_row(t) s_col(u) into bucket (h_row(t) + h_col(u)) mod size, where the h and s are
degree-3 polynomial hashes modulo the prime 2^31 - 1 whose coefficients come from SEED. Hashing rows and columns
apart keeps the pass cheap (a vocabulary-wide logits matrix needs no hash per element) at the price of a little more
variance than a hash per element. Every host draws the same hashes, so S a - S b = S (a - b), and ||S (a - b)||^2
estimates ||a - b||^2 without either tensor leaving its host: unbiased, with a relative standard deviation of about
sqrt(2 / size) or less (less when a few elements carry most of the difference). The baseline's norm is exact (kept
beside the sketch), so the relative error ||a - b|| / ||b|| is as good as the one estimate, and cosine similarity
follows from it and the two exact norms: cos = (||a||^2 + ||b||^2 - ||a - b||^2) / (2 ||a|| ||b||), which keeps its
precision where a and b nearly agree (a float32 dot product reads above 1 there).

The logits also keep, per prompt position, the top_k tokens and their log-probabilities: the top-1 tokens compare
directly, and KL(baseline || candidate) is taken over the baseline's top_k tokens and the rest of the vocabulary
lumped together; a token missing from the candidate's top_k counts at the candidate's k-th probability, its upper
bound.

Example:
    result = compare(candidate_doc["precision"], baseline_doc["precision"], threshold=1e-2)
    result["first_over"]    # "layers.17": the first layer, in depth order, whose error reaches the threshold
"""
from __future__ import annotations

import base64
import hashlib
import math

import numpy as np

from core.errors import UserError

METHOD = "count-sketch, row and column degree-3 polynomial hashes mod 2^31-1"
SEED = 20240917  # shared by every host: sketches drawn from another seed do not compare
PRIME = 2**31 - 1
DEFAULT_THRESHOLD = 1e-2


def hash_coefficients(part: str, seed: int = SEED) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Four coefficients in [1, PRIME) for the bucket hash and four for the sign hash of rows or columns (`part`),
    the same on every host."""
    def draw(k: int) -> int:
        digest = hashlib.sha256(f"devcompare-sketch:{seed}:{part}:{k}".encode()).digest()
        return int.from_bytes(digest[:8], "little") % (PRIME - 1) + 1
    return tuple(draw(k) for k in range(4)), tuple(draw(k) for k in range(4, 8))


def _poly(index, coefficients):
    """(c3 i^3 + c2 i^2 + c1 i + c0) mod PRIME in Horner form, for int64 numpy arrays or torch tensors of indices
    below 2^31 (token and unit numbers): every product stays below 2^62, so int64 arithmetic is exact."""
    c0, c1, c2, c3 = coefficients
    h = (index * c3 + c2) % PRIME
    h = (h * index + c1) % PRIME
    return (h * index + c0) % PRIME


def buckets_and_signs(index, size: int, part: str, seed: int = SEED):
    """Bucket (0..size-1) and sign (+1/-1) of each row or column index (`part`); `index` is an int64 numpy array or
    torch tensor (token numbers, or unit numbers), and the result is of the same kind."""
    bucket_c, sign_c = hash_coefficients(part, seed)
    return _poly(index, bucket_c) % size, 1 - 2 * (_poly(index, sign_c) & 1)


def sketch(values: np.ndarray, first_row: int, size: int, seed: int = SEED) -> np.ndarray:
    """The count sketch (float64) of the rows `values` [tokens, units], its first row being token `first_row` of
    the layer's matrix; the sketch of the whole matrix is the sum over its row blocks."""
    values = np.asarray(values, dtype=np.float64)
    rows, cols = values.shape
    row_b, row_s = buckets_and_signs(np.arange(first_row, first_row + rows, dtype=np.int64), size, "row", seed)
    col_b, col_s = buckets_and_signs(np.arange(cols, dtype=np.int64), size, "col", seed)
    buckets = (row_b[:, None] + col_b[None, :]) % size
    return np.bincount(buckets.ravel(), weights=(values * row_s[:, None] * col_s[None, :]).ravel(), minlength=size)


def encode(values, dtype: str = "<f4") -> str:
    return base64.b64encode(np.ascontiguousarray(values, dtype=dtype).tobytes()).decode("ascii")


def decode(text: str, dtype: str = "<f4") -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=dtype)


def layer_record(name: str, *, elements: int, total: float, total_sq: float, max_abs: float | None, nan: int,
                 inf: int, sketch_values) -> dict:
    """A layer's entry from its running sums over the finite values (total, total_sq) and its sketch."""
    finite = elements - nan - inf
    mean = total / finite if finite else None
    std = math.sqrt(max(total_sq / finite - mean * mean, 0.0)) if finite else None
    return {"name": name, "elements": elements, "mean": mean, "std": std, "max_abs": max_abs if finite else None,
            "l2": math.sqrt(total_sq), "nan": nan, "inf": inf, "sketch": encode(sketch_values)}


def logits_record(ids, logprobs) -> dict:
    """The logits' entry: per position (rows), the top_k token ids and log-probabilities, most likely first."""
    ids = np.asarray(ids, dtype=np.int64)
    return {"top_k": int(ids.shape[1]), "positions": int(ids.shape[0]), "ids": encode(ids, "<i4"),
            "logprobs": encode(logprobs)}


def section(*, tasks: list[str], tokens: list[int], size: int, layers: list[dict], logits: dict | None,
            seconds: float | None) -> dict:
    """The run document's `precision` section."""
    return {"sketch": {"method": METHOD, "size": size, "seed": SEED}, "prompts": {"tasks": tasks, "tokens": tokens},
            "layers": layers, "logits": logits, "seconds": seconds}


def _check_comparable(a: dict, b: dict) -> None:
    if a["sketch"] != b["sketch"]:
        raise UserError(f"the runs' sketches differ ({a['sketch']} vs {b['sketch']}): only runs with the same "
                        "[precision] sketch_size compare")
    if a["prompts"] != b["prompts"]:
        why = ("different prompts" if a["prompts"]["tasks"] != b["prompts"]["tasks"] else
               "the same prompts tokenised differently (another model or tokenizer?)")
        raise UserError(f"the runs' precision passes saw {why}: compare runs of one model with the same "
                        "[precision] prompts")


def _layer_error(a: dict, b: dict) -> dict:
    row = {"layer": b["name"], "rel_error": None, "cosine": None, "max_abs": [a["max_abs"], b["max_abs"]],
           "nonfinite": [a["nan"] + a["inf"], b["nan"] + b["inf"]]}
    if any(row["nonfinite"]):
        return row  # NaN or Inf in either output: no error to estimate, and divergent whatever the rest says
    diff = decode(a["sketch"]).astype(np.float64) - decode(b["sketch"]).astype(np.float64)
    diff_sq = float(diff @ diff)
    na, nb = a["l2"], b["l2"]
    row["rel_error"] = math.sqrt(diff_sq) / nb if nb > 0 else (0.0 if diff_sq == 0 else None)
    if na > 0 and nb > 0:
        row["cosine"] = min(1.0, max(-1.0, (na * na + nb * nb - diff_sq) / (2 * na * nb)))
    return row


def logits_agreement(a: dict | None, b: dict | None, tokens: list[int], tasks: list[str]) -> dict | None:
    """Top-1 agreement and per-position KL(baseline || candidate) from the two runs' stored top_k."""
    if a is None or b is None or a["positions"] != b["positions"]:
        return None
    ids_a, ids_b = (decode(x["ids"], "<i4").reshape(x["positions"], x["top_k"]) for x in (a, b))
    lp_a, lp_b = (decode(x["logprobs"]).astype(np.float64).reshape(x["positions"], x["top_k"]) for x in (a, b))
    match = ids_b[:, :, None] == ids_a[:, None, :]  # [position, baseline's j, candidate's k]
    q = np.where(match.any(-1), np.where(match, np.exp(lp_a)[:, None, :], 0).sum(-1), np.exp(lp_a[:, -1:]))
    p = np.exp(lp_b)
    rest_p, rest_q = np.clip(1 - p.sum(1), 0, 1), np.clip(1 - q.sum(1), 1e-30, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = (p * (lp_b - np.log(q))).sum(1) + np.where(rest_p > 0, rest_p * np.log(rest_p / rest_q), 0)
    kl = np.maximum(kl, 0)
    same = ids_a[:, 0] == ids_b[:, 0]
    first = None
    if not same.all():
        pos = int(np.argmin(same))
        ends = np.cumsum(tokens)
        prompt = int(np.searchsorted(ends, pos, side="right"))
        first = {"task": tasks[prompt], "position": pos - int(ends[prompt] - tokens[prompt])}
    finite = kl[np.isfinite(kl)]  # a NaN logit makes its position's KL unknown: None, left out of mean and max
    return {"positions": int(same.size), "top1_agreement": float(same.mean()) if same.size else None,
            "first_disagreement": first, "kl_mean": float(finite.mean()) if finite.size else None,
            "kl_max": float(finite.max()) if finite.size else None,
            "kl": [float(x) if math.isfinite(x) else None for x in kl]}


def compare(candidate: dict, baseline: dict, threshold: float = DEFAULT_THRESHOLD) -> dict:
    """Per layer (the baseline's order, which is depth order): estimated relative error ||a - b|| / ||b|| and cosine
    similarity; the first layer whose error reaches `threshold` (or that has no error: NaN or Inf in an output, or a
    zero baseline against a non-zero candidate); the logits' agreement. a: candidate, b: baseline."""
    _check_comparable(candidate, baseline)
    mine = {layer["name"]: layer for layer in candidate["layers"]}
    rows = [_layer_error(mine[b["name"]], b) for b in baseline["layers"] if b["name"] in mine]
    first = next((r["layer"] for r in rows if r["rel_error"] is None or r["rel_error"] >= threshold), None)
    prompts = baseline["prompts"]
    return {"threshold": threshold, "layers": rows, "first_over": first, "tasks": prompts["tasks"],
            "logits": logits_agreement(candidate["logits"], baseline["logits"], prompts["tokens"], prompts["tasks"])}
