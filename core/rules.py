"""Domain rules that every view of the data must apply the same way: the default device pair, when a HumanEval
problem counts as passed, and the exact McNemar test on per-problem outcomes."""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Literal

# The comparison the product exists for: the Ascend candidate against the NVIDIA baseline.
DEFAULT_CANDIDATE, DEFAULT_BASELINE = "910B3", "A100"
DEFAULT_PAIR = (DEFAULT_CANDIDATE, DEFAULT_BASELINE)


def pass_fractions(results: Iterable[tuple[str, bool]]) -> dict[str, float]:
    """task_id -> fraction of its samples that passed, from (task_id, passed) per sample."""
    tally: dict[str, list[int]] = {}
    for task, passed in results:
        t = tally.setdefault(task, [0, 0])
        t[0] += bool(passed)
        t[1] += 1
    return {task: k / n for task, (k, n) in tally.items()}


def problem_passed(fraction: float) -> bool:
    """A problem with several samples passes when at least half of its samples pass (one sample: that sample)."""
    return fraction >= 0.5


def discordant(candidate: Mapping[str, float], baseline: Mapping[str, float]) -> tuple[int, int]:
    """(problems passed by the candidate only, by the baseline only) over the problems both ran."""
    both = candidate.keys() & baseline.keys()
    c_only = sum(problem_passed(candidate[t]) and not problem_passed(baseline[t]) for t in both)
    b_only = sum(problem_passed(baseline[t]) and not problem_passed(candidate[t]) for t in both)
    return c_only, b_only


def mcnemar_p(candidate_only: int, baseline_only: int,
              alternative: Literal["two-sided", "less"] = "two-sided") -> float:
    """Exact McNemar p: the discordant problems split as Binomial(b + c, 1/2) when the devices do not differ.

    "less" is one-sided for "the candidate is worse" (few candidate-only passes). Integers only, so the first
    page view does not import scipy; equal to scipy.stats.binomtest(b, b + c, 0.5, alternative).pvalue.
    """
    n = candidate_only + baseline_only
    if n == 0:
        return 1.0
    if alternative == "less":
        return min(1.0, sum(math.comb(n, i) for i in range(candidate_only + 1)) / 2**n)
    k = min(candidate_only, baseline_only)  # symmetric under p = 1/2: twice the smaller tail
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)
