"""Uncertainty for a comparison: is an accuracy difference real, and how sure is a speed ratio?

- Accuracy: problems are paired (both devices ran the same ones), so the test is the exact McNemar test on the
  discordant problems (passed on one device only) and the interval is a paired bootstrap over problems of the
  pass@1 difference. A problem with several samples counts as passed by core.rules.problem_passed, and
  contributes its pass fraction to pass@1.
- Speed: the two devices' repeats are independent samples, so the ratio's interval is a bootstrap of
  median(candidate repeats) / median(baseline repeats), each side resampled on its own.

Pure functions over plain numbers; the store queries (db/queries.py) feed them. Deterministic: fixed seeds.

Example:
    paired_accuracy({"HumanEval/0": 1.0, ...}, {"HumanEval/0": 0.0, ...}).label()
    ratio_interval([8.9, 9.0, 8.8], [16.5, 16.6, 16.4])
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from core.rules import mcnemar_p, problem_passed

ALPHA = 0.05  # two-sided significance level of the accuracy test; intervals are (1 - ALPHA) = 95%
RESAMPLES = 2000  # bootstrap resamples: the 2.5% / 97.5% percentiles move by < 1% of the width at this count
SEED = 20240601  # fixed, so a page shows the same interval on every reload


@dataclass(frozen=True)
class AccuracyTest:
    problems: int  # problems both runs have results for (the paired set)
    both: int
    candidate_only: int  # passed on the candidate device only
    baseline_only: int
    neither: int
    difference: float  # pass@1 candidate - baseline over the paired problems
    interval: tuple[float, float]  # paired-bootstrap (1 - ALPHA) interval of `difference`
    p_value: float  # exact McNemar, two-sided

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA

    def label(self) -> str:
        verdict = "significant" if self.significant else "not significant"
        return (f"{verdict} (exact McNemar p = {self.p_value:.3g} on {self.candidate_only} vs {self.baseline_only} "
                f"problems passed on one device only, alpha = {ALPHA})")


def paired_accuracy(candidate: Mapping[str, float], baseline: Mapping[str, float],
                    resamples: int = RESAMPLES, seed: int = SEED) -> AccuracyTest | None:
    """candidate/baseline: task_id -> fraction of samples passed. None when no problem is in both."""
    common = sorted(candidate.keys() & baseline.keys())
    if not common:
        return None
    c = np.array([candidate[t] for t in common], dtype=float)
    b = np.array([baseline[t] for t in common], dtype=float)
    cp, bp = problem_passed(c), problem_passed(b)  # elementwise on arrays
    d = c - b  # per-problem pass@1 difference: its mean is the pass@1 difference
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(resamples, len(d)))].mean(axis=1)
    lo, hi = np.quantile(means, [ALPHA / 2, 1 - ALPHA / 2])
    only_c, only_b = int(np.sum(cp & ~bp)), int(np.sum(bp & ~cp))
    return AccuracyTest(problems=len(common), both=int(np.sum(cp & bp)), candidate_only=only_c,
                        baseline_only=only_b, neither=int(np.sum(~cp & ~bp)), difference=float(d.mean()),
                        interval=(float(lo), float(hi)), p_value=mcnemar_p(only_c, only_b))


def ratio_interval(candidate: Sequence[float] | None, baseline: Sequence[float] | None,
                   resamples: int = RESAMPLES, seed: int = SEED) -> tuple[float, float] | None:
    """(1 - ALPHA) bootstrap interval of median(candidate) / median(baseline) from the raw repeats.

    None without at least 2 repeats on each side (one repeat says nothing about spread) or with a zero median.
    """
    if not candidate or not baseline or len(candidate) < 2 or len(baseline) < 2:
        return None
    c, b = np.asarray(candidate, dtype=float), np.asarray(baseline, dtype=float)
    rng = np.random.default_rng(seed)
    mc = np.median(c[rng.integers(0, len(c), size=(resamples, len(c)))], axis=1)
    mb = np.median(b[rng.integers(0, len(b), size=(resamples, len(b)))], axis=1)
    if np.any(mb == 0):
        return None
    lo, hi = np.quantile(mc / mb, [ALPHA / 2, 1 - ALPHA / 2])
    return float(lo), float(hi)
