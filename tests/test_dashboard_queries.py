"""The dashboard's statistics (db/stats.py) and read queries (db/queries.py), without Streamlit."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import binomtest

from core.rules import mcnemar_p
from db import queries, stats
from db.alerts import listing
from db.engine import open_store, session_scope
from tests.test_dashboard import MEASURED_FP, REFERENCE_FP, seed


@given(st.integers(0, 200), st.integers(0, 200), st.sampled_from(["two-sided", "less"]))
def test_mcnemar_is_scipys_exact_binomial_test(b, c, alternative):
    expected = 1.0 if b + c == 0 else binomtest(b, b + c, 0.5, alternative=alternative).pvalue
    assert mcnemar_p(b, c, alternative) == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_paired_accuracy_counts_interval_and_label():
    # 54 vs 53 as one-device-only problems 3 vs 2: not significant
    cand = {f"t{i}": 1.0 if i < 54 else 0.0 for i in range(164)}
    base = {f"t{i}": 1.0 if (i < 51 or i in (54, 55)) else 0.0 for i in range(164)}
    test = stats.paired_accuracy(cand, base)
    assert (test.problems, test.both, test.candidate_only, test.baseline_only) == (164, 51, 3, 2)
    assert test.neither == 164 - 56 and test.difference == pytest.approx(1 / 164)
    assert test.p_value == 1.0 and not test.significant and test.label().startswith("not significant")
    lo, hi = test.interval
    assert lo < 0 < hi  # the interval covers "no difference"
    # 20 vs 2 discordant problems: significant, interval excludes 0
    cand = {f"t{i}": 1.0 if i < 30 else 0.0 for i in range(100)}
    base = {f"t{i}": 1.0 if (i < 10 or i in (30, 31)) else 0.0 for i in range(100)}
    test = stats.paired_accuracy(cand, base)
    assert (test.candidate_only, test.baseline_only) == (20, 2) and test.significant
    assert test.label().startswith("significant") and test.interval[0] > 0
    assert stats.paired_accuracy({"a": 1.0}, {"b": 1.0}) is None
    # the bootstrap keeps problems paired: devices that agree on all but 2 of 164 problems (half of them passing)
    # differ only where a resample draws those two, about +-0.02; resampling each device on its own gives +-0.1
    cand = {f"t{i}": 1.0 if i < 82 else 0.0 for i in range(164)}
    base = {**cand, "t0": 0.0, "t100": 1.0}
    lo, hi = stats.paired_accuracy(cand, base).interval
    assert lo <= 0 <= hi and hi - lo < 0.05


def test_ratio_interval_from_repeats():
    c, b = [8.8, 9.0, 9.2, 8.9, 9.1], [16.4, 16.5, 16.6, 16.3, 16.7]
    lo, hi = stats.ratio_interval(c, b)
    assert lo <= 9.0 / 16.5 <= hi and 8.8 / 16.7 <= lo and hi <= 9.2 / 16.3
    assert stats.ratio_interval(c, b) == (lo, hi)  # fixed seed: the same on every reload
    assert stats.ratio_interval([9.0], b) is None and stats.ratio_interval(None, b) is None
    assert stats.ratio_interval(c, [0.0, 0.0]) is None


def test_queries_on_a_seeded_store(tmp_path, reference_docs):
    url = f"sqlite:///{tmp_path / 's.db'}"
    docs = seed(url, reference_docs)["docs"]
    with session_scope(open_store(url)) as s:
        jobs = {j["fingerprint"]: j for j in queries.jobs(s)}
        assert jobs[MEASURED_FP]["devices"] == {"910B3": 3, "A100": 2} and jobs[REFERENCE_FP]["runs"] == 2
        assert list(jobs)[0] == MEASURED_FP  # most recently run first
        assert queries.batch_sizes(s, MEASURED_FP) == [1]
        series = queries.trend(s, MEASURED_FP, "910B3", "A100", "pass_at_1")
        assert len(series["values"]) == 5 and len(series["ratios"]) == 4
        with pytest.raises(ValueError):
            queries.trend(s, MEASURED_FP, "910B3", "A100", "ttft_ms")
        total, rows = queries.run_list(s, devices=["910B3"], source="measured")
        assert total == 3 and rows[0]["id"] == docs[4]["run_id"] and rows[0]["passed"] == 6
        assert queries.run_list(s, id_prefix="%")[0] == 0  # a LIKE wildcard is a literal character here
        assert queries.run_list(s, id_prefix=docs[0]["run_id"][:8].upper())[0] == 1
        detail = queries.run_detail(s, docs[0]["run_id"])
        assert detail["environment"]["driver"] == "535.104.05" and len(detail["problems"]) == 10
        assert [p["task_id"] for p in detail["problems"]][-2:] == ["HumanEval/8", "HumanEval/9"]
        assert queries.run_detail(s, "no-such-run") is None
        diff = queries.problem_diff(s, docs[4]["run_id"], docs[3]["run_id"])
        assert [e["task_id"] for e in diff][:3] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
        assert (diff[4]["candidate_pass"], diff[4]["baseline_pass"]) == (1.0, 0.0)
        assert listing.alerts(s) == [] and listing.alert_markers(s, MEASURED_FP, "pass_at_1", "910B3", "A100") == []
