"""Regression detection (db/detect.py): series built from run documents, the alert states, config, suppression."""
from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from db.detect import (DEFAULT_RULES, MetricRule, Point, SeriesKey, Suppression, evaluate_series, load_config,
                       mcnemar_p, point_from_documents, suppressed_by)
from core import rundoc
from core.errors import UserError

T0 = dt.datetime(2025, 3, 1, tzinfo=dt.timezone.utc)
FP = "0123456789abcdef"
SPEED = DEFAULT_RULES["decode_tokens_per_s"]


def run_document(device: str, at: dt.datetime, decode: float, first_token: float = 1.0,
                 passed: list[bool] | None = None) -> dict:
    doc = rundoc.new_document(device={"class": device, "type": "npu" if device.startswith("910") else "cuda",
                                      "name": None, "count": 2},
                              environment={}, job_name="codellama", fingerprint=FP, spec={},
                              started_at=at.isoformat())
    doc["perf"] = [{"batch_size": 1, "decode_tokens_per_s": {"median": decode},
                    "first_token_tokens_per_s": {"median": first_token}}]
    if passed is not None:
        doc["humaneval"] = {
            "problems": len(passed), "passed": sum(passed), "pass_at_k": {"1": sum(passed) / len(passed)},
            "results": [{"task_id": f"HumanEval/{i}", "sample": 0, "completion": "", "passed": ok,
                         "verdict": "passed" if ok else "failed: "} for i, ok in enumerate(passed)]}
    return rundoc.validate(doc)


def speed_series(n: int, cv: float, seed: int, candidate_factor=lambda i: 1.0, baseline_factor=lambda i: 1.0,
                 annotations: dict[int, str] | None = None, documents: bool = True) -> list[Point]:
    """Decode-speed points from pairs of run documents, log-normal noise with coefficient of variation `cv`."""
    rng = np.random.default_rng(seed)
    s = math.sqrt(math.log1p(cv * cv))
    points = []
    for i in range(n):
        at = T0 + dt.timedelta(hours=i)
        cand = 8.9 * candidate_factor(i) * math.exp(rng.normal(0, s))
        base = 16.5 * baseline_factor(i) * math.exp(rng.normal(0, s))
        note = (annotations or {}).get(i)
        if not documents:  # thousands of points: skip the schema validation
            points.append(Point(at, cand, base, f"c{i}", f"b{i}", note))
            continue
        points.append(point_from_documents(run_document("910B3", at, cand), run_document("A100", at, base),
                                           "decode_tokens_per_s", batch_size=1, annotation=note))
    return points


def states(result) -> list[str]:
    return [v.state for v in result.verdicts]


def test_stable_series_with_3pct_noise_raises_nothing():
    result = evaluate_series(speed_series(80, 0.03, seed=1), SPEED)
    assert "active" not in states(result)
    assert result.open_alert is None
    assert all(a.state == "outlier" for a in result.alerts)  # at most a lone point that went back
    assert states(result)[:5] == ["insufficient_data"] * 5  # static guard until min_points accepted


def test_false_active_alerts_stay_below_1_per_100_stable_runs():
    runs = active = 0
    for seed in range(30):
        result = evaluate_series(speed_series(100, 0.03, seed=100 + seed, documents=False), SPEED)
        runs += len(result.verdicts)
        active += sum(a.state in ("active", "resolved") for a in result.alerts)
    assert 100 * active / runs <= 1.0


def test_candidate_drop_is_suspected_then_active_and_says_the_candidate_fell():
    drop_at = 30
    points = speed_series(40, 0.01, seed=2, candidate_factor=lambda i: 0.9 if drop_at <= i < 35 else 1.0)
    result = evaluate_series(points, SPEED)
    s = states(result)
    assert "suspected" not in s[:drop_at] and "active" not in s[:drop_at]
    assert s[drop_at:drop_at + 2] == ["suspected", "active"]
    assert s[drop_at + 2:35] == ["active"] * 3
    assert s[35] == "resolved"
    first = result.verdicts[drop_at]
    assert first.moved == "candidate fell"
    assert first.change_pct == pytest.approx(-10, abs=3)
    assert first.baseline_ratio == pytest.approx(8.9 / 16.5, rel=0.02)
    alert = result.alerts[-1]
    assert alert.state == "resolved" and len(alert.verdicts) == 5
    assert alert.identity == (points[drop_at].candidate_run, points[drop_at].baseline_run)
    assert alert.closed_by.point is points[35]


def test_baseline_rise_says_the_baseline_rose():
    points = speed_series(34, 0.01, seed=3, baseline_factor=lambda i: 1.12 if i >= 30 else 1.0)
    result = evaluate_series(points, SPEED)
    assert states(result)[30:32] == ["suspected", "active"]
    assert result.open_alert.state == "active"
    assert result.open_alert.latest.moved == "baseline rose"


def test_both_sides_moving_names_both():
    points = speed_series(33, 0.01, seed=4, candidate_factor=lambda i: 0.93 if i >= 30 else 1.0,
                          baseline_factor=lambda i: 1.07 if i >= 30 else 1.0)
    result = evaluate_series(points, SPEED)
    assert result.open_alert.latest.moved == "candidate fell and baseline rose"


def test_lone_dip_that_reverts_is_an_outlier():
    points = speed_series(36, 0.01, seed=5, candidate_factor=lambda i: 0.8 if i == 30 else 1.0)
    result = evaluate_series(points, SPEED)
    s = states(result)
    assert s[30] == "outlier" and s[31] == "ok"
    assert "active" not in s and "suspected" not in s
    (alert,) = result.alerts
    assert alert.state == "outlier" and alert.closed_by.point is points[31]
    # the outlier joined the baseline once it went back; the median does not move
    assert result.verdicts[35].baseline_ratio == pytest.approx(result.verdicts[29].baseline_ratio, rel=0.01)


def test_annotation_restarts_the_baseline():
    """An intended 30% drop, annotated at the run where it happened, raises nothing and becomes the new normal."""
    points = speed_series(45, 0.01, seed=6, candidate_factor=lambda i: 0.7 if i >= 30 else 1.0,
                          annotations={30: "CANN 8.0 -> 8.1: new fused attention off"})
    result = evaluate_series(points, SPEED)
    s = states(result)
    assert result.alerts == []
    assert s[30:35] == ["insufficient_data"] * 5
    assert "baseline restarted" in result.verdicts[30].reason
    assert s[35:] == ["ok"] * 10
    assert result.verdicts[44].baseline_ratio == pytest.approx(0.7 * 8.9 / 16.5, rel=0.02)
    # without the annotation the same series is an active regression
    plain = [Point(p.at, p.candidate, p.baseline, p.candidate_run, p.baseline_run) for p in points]
    assert evaluate_series(plain, SPEED).open_alert.state == "active"


def test_annotation_during_an_active_alert_resolves_it():
    points = speed_series(40, 0.01, seed=7, candidate_factor=lambda i: 0.8 if i >= 30 else 1.0,
                          annotations={33: "accepted: slower but exact softmax"})
    result = evaluate_series(points, SPEED)
    (alert,) = result.alerts
    assert alert.state == "resolved" and alert.closed_by.point is points[33]
    assert states(result)[33:] == ["insufficient_data"] * 5 + ["ok"] * 2


def test_insufficient_data_uses_a_static_guard_against_the_previous_point():
    values = [1.0, 1.02, 0.98, 0.6, 0.62, 0.99]  # ratio; a 40% fall on the 4th run, confirmed, then back
    points = [Point(T0 + dt.timedelta(hours=i), v, 1.0, f"c{i}", f"b{i}") for i, v in enumerate(values)]
    s = states(evaluate_series(points, SPEED))
    assert s == ["insufficient_data", "insufficient_data", "insufficient_data", "suspected", "active", "resolved"]
    small = [Point(T0 + dt.timedelta(hours=i), v, 1.0, f"c{i}", f"b{i}") for i, v in enumerate([1, 0.9, 0.92])]
    assert states(evaluate_series(small, SPEED)) == ["insufficient_data"] * 3  # 10% is inside the 20% guard


def test_a_drop_below_the_practical_threshold_is_not_an_alert():
    """At 0.2% noise a 3% drop is far outside the statistical limit, yet smaller than the 5% that matters."""
    points = speed_series(40, 0.002, seed=8, candidate_factor=lambda i: 0.97 if i >= 30 else 1.0)
    assert states(evaluate_series(points, SPEED))[30:] == ["ok"] * 10
    strict = MetricRule(threshold=0.02)
    assert states(evaluate_series(points, strict))[30:32] == ["suspected", "active"]


def test_lower_is_better_metric_alerts_on_a_rise():
    rule = MetricRule(higher_is_better=False)
    points = [Point(T0 + dt.timedelta(hours=i), 10.0 * (1.15 if i >= 20 else 1.0) * (1 + 0.003 * (-1) ** i), 5.0,
                    f"c{i}", f"b{i}") for i in range(22)]
    result = evaluate_series(points, rule)
    assert states(result)[20:] == ["suspected", "active"]
    assert result.open_alert.latest.moved == "candidate rose"


# --- pass@1: practical threshold plus the paired test ------------------------------------------------------------

def humaneval_series(candidate_passes: list[list[bool]], baseline_passes: list[bool]) -> list[Point]:
    points = []
    for i, passed in enumerate(candidate_passes):
        at = T0 + dt.timedelta(days=i)
        cand = run_document("910B3", at, 8.9, passed=passed)
        base = run_document("A100", at, 16.5, passed=baseline_passes)
        points.append(point_from_documents(cand, base, "pass_at_1"))
    return points


def test_pass_at_1_drop_must_be_significant_on_per_problem_outcomes():
    rule = DEFAULT_RULES["pass_at_1"]
    base = [i < 54 for i in range(164)]  # 54 of 164, as the reference report
    same = [base] * 10
    # 6 problems lost: a 11% lower ratio but McNemar p = 0.016 only if nothing was gained elsewhere
    lost = [i < 48 for i in range(164)]
    swapped = [(i < 48) or (54 <= i < 58) for i in range(164)]  # 6 lost, 4 gained: p = 0.38
    significant = humaneval_series(same + [lost, lost], base)
    noise = humaneval_series(same + [swapped, swapped], base)
    assert significant[10].discordant == (0, 6)
    assert states(evaluate_series(significant, rule))[10:] == ["suspected", "active"]
    assert noise[10].discordant == (4, 6) and noise[10].ratio == pytest.approx(52 / 54)
    unpaired = MetricRule(threshold=0.03)  # the ratio drop (3.7%) passes a 3% threshold ...
    assert states(evaluate_series(noise, unpaired))[10:] == ["suspected", "active"]
    strict = MetricRule(threshold=0.03, paired_alpha=0.05)
    assert states(evaluate_series(noise, strict))[10:] == ["ok", "ok"]  # ... but 6 lost vs 4 gained is no evidence


def test_pass_at_1_of_zero_on_the_candidate_is_a_total_drop():
    base = [i < 54 for i in range(164)]
    points = humaneval_series([base] * 10 + [[False] * 164] * 2, base)
    result = evaluate_series(points, DEFAULT_RULES["pass_at_1"])
    assert states(result)[10:] == ["suspected", "active"]
    assert result.verdicts[10].change_pct == -100 and result.open_alert.latest.moved == "candidate fell"


def test_both_sides_at_zero_are_insufficient_data_and_do_not_break_the_series():
    zero = [False] * 164
    points = humaneval_series([zero] * 3, zero)
    result = evaluate_series(points, DEFAULT_RULES["pass_at_1"])
    assert states(result) == ["insufficient_data"] * 3 and result.alerts == []
    assert "undefined" in result.verdicts[0].reason


def test_mcnemar_is_exact_and_one_sided():
    assert mcnemar_p(0, 0) == 1.0
    assert mcnemar_p(0, 6) == pytest.approx(0.5 ** 6)
    assert mcnemar_p(6, 0) == 1.0  # the candidate gaining is never evidence of a drop


def test_point_from_documents_rejects_different_jobs_and_skips_missing_metrics():
    a = run_document("910B3", T0, 8.9)
    b = run_document("A100", T0, 16.5)
    assert point_from_documents(a, b, "decode_tokens_per_s", batch_size=8) is None  # no batch-8 record
    assert point_from_documents(a, b, "pass_at_1") is None  # no HumanEval
    b["job"]["fingerprint"] = "f" * 16
    with pytest.raises(UserError, match="different jobs"):
        point_from_documents(a, b, "decode_tokens_per_s", batch_size=1)


# --- properties the store relies on ------------------------------------------------------------------------------

ratios = st.lists(st.floats(min_value=0.5, max_value=1.5), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(ratios, st.integers(min_value=1, max_value=40))
def test_a_verdict_depends_only_on_earlier_points(values, cut):
    """Re-evaluating after each push never rewrites history, except a suspected point that went back (outlier)."""
    points = [Point(T0 + dt.timedelta(hours=i), v, 1.0, f"c{i}", f"b{i}") for i, v in enumerate(values)]
    full = evaluate_series(points, SPEED)
    prefix = evaluate_series(points[:cut], SPEED)
    for before, after in zip(prefix.verdicts, full.verdicts):
        assert before.state == after.state or (before.state == "suspected" and after.state == "outlier")
    assert {a.identity for a in prefix.alerts} <= {a.identity for a in full.alerts}
    assert len(full.verdicts) == len(points)
    assert sum(a.state in ("suspected", "active") for a in full.alerts) <= 1  # only the last can be open


@settings(max_examples=30, deadline=None)
@given(ratios, st.randoms(use_true_random=False))
def test_input_order_does_not_matter(values, rnd):
    points = [Point(T0 + dt.timedelta(hours=i), v, 1.0, f"c{i}", f"b{i}") for i, v in enumerate(values)]
    shuffled = list(points)
    rnd.shuffle(shuffled)
    assert evaluate_series(shuffled, SPEED) == evaluate_series(points, SPEED)


# --- thresholds file and suppression -----------------------------------------------------------------------------

def test_load_config_merges_the_file_over_the_defaults(tmp_path):
    path = tmp_path / "alerts.toml"
    path.write_text("""
[metrics.decode_tokens_per_s]
threshold = 0.08
window = 40

[[suppress]]
pattern = "0123*/decode_tokens_per_s/910B3-vs-A100"
until = 2025-04-01T00:00:00Z
reason = "CANN upgrade in progress"
""")
    config = load_config(path)
    assert config.rule("decode_tokens_per_s") == MetricRule(threshold=0.08, window=40)
    assert config.rule("first_token_tokens_per_s") == MetricRule()
    assert config.rule("pass_at_1").paired_alpha == 0.05
    (sup,) = config.suppressions
    assert sup.reason == "CANN upgrade in progress"
    assert load_config(None).rules == DEFAULT_RULES


@pytest.mark.parametrize("text, message", [
    ("[metrics.decode_tokens_per_s]\nthreshhold = 0.05", "unknown key 'metrics.decode_tokens_per_s.threshhold'"),
    ("[metrics.decode_tokens_per_sec]\nthreshold = 0.05", "unknown metric 'metrics.decode_tokens_per_sec'"),
    ("[metrics.pass_at_1]\nthreshold = '5%'", "metrics.pass_at_1.threshold: expected float, got str"),
    ("[metrics.pass_at_1]\nwindow = 2.5", "metrics.pass_at_1.window: expected int"),
    ("[metrics.pass_at_1]\nhigher_is_better = 1", "metrics.pass_at_1.higher_is_better: expected bool"),
    ("[metrics.pass_at_1]\nthreshold = 5", "threshold is a fraction in (0, 1), e.g. 0.05 for 5%"),
    ("[metrics.pass_at_1]\nwindow = 3", "window (3) must be >= min_points (5)"),
    ("[alerts]\nx = 1", "unknown key 'alerts'"),
    ("[[suppress]]\npattern = '*'\nuntil = 2025-04-01", "suppress[0].until: expected a date-time with an offset"),
    ("[[suppress]]\npattern = '*'\nuntil = 2025-04-01T00:00:00", "with an offset"),
    ("[[suppress]]\nuntil = 2025-04-01T00:00:00Z", "suppress[0]: missing required key 'pattern'"),
    ("[[suppress]]\npattern = 'a/b/c/d/e'\nuntil = 2025-04-01T00:00:00Z", "suppress[0].pattern"),
    ("[metrics.pass_at_1\n", "invalid TOML"),
])
def test_config_errors_are_one_line_naming_file_and_key(tmp_path, text, message):
    path = tmp_path / "alerts.toml"
    path.write_text(text)
    with pytest.raises(UserError) as e:
        load_config(path)
    assert message in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)


def test_missing_config_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="alert config not found"):
        load_config(tmp_path / "nope.toml")


def test_suppression_matches_by_segment_prefix_until_it_expires():
    key = SeriesKey(FP, "decode_tokens_per_s", "910B3", "A100", batch_size=8)
    assert str(key) == f"{FP}/decode_tokens_per_s/910B3-vs-A100/bs8"
    until = T0 + dt.timedelta(days=7)
    every_batch = Suppression("*/decode_tokens_per_s/910B3-vs-A100", until)
    assert every_batch.matches(key)
    assert not Suppression("*/decode_tokens_per_s/910B3-vs-A100/bs1", until).matches(key)
    assert not Suppression("*/first_token_tokens_per_s", until).matches(key)
    assert not Suppression(f"{FP}/decode_tokens_per_s/910B3-vs-A100/bs8/x", until).matches(key)
    assert Suppression("0123*", until).matches(key)
    sups = [Suppression("*/pass_at_1", until), every_batch]
    assert suppressed_by(key, T0, sups) is every_batch
    assert suppressed_by(key, until, sups) is None  # expired at `until`
    assert suppressed_by(SeriesKey(FP, "pass_at_1", "910B3", "A100"), T0, sups) is sups[0]
    with pytest.raises(ValueError, match="timezone-aware"):
        suppressed_by(key, T0.replace(tzinfo=None), sups)
