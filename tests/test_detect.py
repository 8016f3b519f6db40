"""Regression detection (db/alerts/detect.py) on series as the store forms them: one point per run that lands,
devices alternating; then the thresholds file and suppression (db/alerts/config.py)."""
from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import UserError
from core.rules import mcnemar_p
from db.alerts.config import DEFAULT_RULES, MetricRule, Suppression, load_config, suppressed_by
from db.alerts.detect import Point, evaluate_series
from db.alerts.series import SeriesKey

T0 = dt.datetime(2025, 3, 1, tzinfo=dt.timezone.utc)
SPEED = DEFAULT_RULES["decode_tokens_per_s"]


def alternating(candidate: list[float], baseline: list[float], notes: dict[str, str] | None = None) -> list[Point]:
    """Points as two fleets make them: baseline run i lands, then candidate run i; each arrival pairs with the other
    device's latest run (what db.pairing.paired yields). Run ids: b0, c0, b1, c1, ..."""
    runs = [(side, i, v) for i, pair in enumerate(zip(baseline, candidate)) for side, v in zip("bc", pair)]
    runs += [("c", i, v) for i, v in enumerate(candidate[len(baseline):], len(baseline))]
    runs += [("b", i, v) for i, v in enumerate(baseline[len(candidate):], len(candidate))]
    latest, points = {}, []
    for n, (side, i, v) in enumerate(runs):
        latest[side] = (f"{side}{i}", v)
        if len(latest) == 2:
            (c_id, c), (b_id, b) = latest["c"], latest["b"]
            run = f"{side}{i}"
            points.append(Point(T0 + dt.timedelta(hours=n), c, b, c_id, b_id,
                                "candidate" if side == "c" else "baseline", (notes or {}).get(run)))
    return points


def noisy(n: int, cv: float, rng, level: float, factor=lambda i: 1.0) -> list[float]:
    s = math.sqrt(math.log1p(cv * cv))
    return [level * factor(i) * math.exp(rng.normal(0, s)) for i in range(n)]


def speed_series(n: int, cv: float, seed: int, candidate_factor=lambda i: 1.0, baseline_factor=lambda i: 1.0,
                 notes: dict[str, str] | None = None) -> list[Point]:
    """n runs per device of decode speed with log-normal noise (coefficient of variation `cv`), alternating."""
    rng = np.random.default_rng(seed)
    return alternating(noisy(n, cv, rng, 8.9, candidate_factor), noisy(n, cv, rng, 16.5, baseline_factor), notes)


def states(result, side: str | None = None) -> list[str]:
    return [v.state for v in result.verdicts if side is None or v.side == side]


def verdict_of(result, run: str):
    return next(v for v in result.verdicts if v.run == run)


def test_stable_series_with_3pct_noise_raises_nothing():
    result = evaluate_series(speed_series(80, 0.03, seed=1), SPEED)
    assert "active" not in states(result)
    assert result.open_episodes == [] or result.open_episodes[0].state == "suspected"
    assert all(e.state in ("outlier", "suspected") for e in result.episodes)
    # each device has a static guard until it has min_points accepted runs
    assert states(result, "candidate")[:5] == ["insufficient_data"] * 5
    assert states(result, "baseline")[:4] == ["insufficient_data"] * 4  # b0 joined unjudged with the first point


def test_false_active_alerts_stay_below_1_per_100_stable_runs():
    runs = active = 0
    for seed in range(30):
        result = evaluate_series(speed_series(50, 0.05, seed=100 + seed), SPEED)
        runs += len(result.verdicts)
        active += sum(e.state in ("active", "resolved") for e in result.episodes)
    assert 100 * active / runs <= 1.0


def test_candidate_drop_is_suspected_then_active_by_its_next_run_and_says_the_candidate_fell():
    result = evaluate_series(speed_series(40, 0.01, seed=2, candidate_factor=lambda i: 0.85 if 30 <= i < 35 else 1),
                             SPEED)
    cand = [v for v in result.verdicts if v.side == "candidate"]
    assert "suspected" not in states(result)[:58] and "active" not in states(result)[:58]
    assert [v.state for v in cand[30:36]] == ["suspected", "active", "active", "active", "active", "resolved"]
    # baseline runs landing meanwhile are judged on their own: they neither confirm nor end the episode
    assert all(v.state == "ok" for v in result.verdicts if v.side == "baseline" and int(v.run[1:]) >= 30)
    first = cand[30]
    assert first.moved == "candidate fell" and first.change_pct == pytest.approx(-15, abs=3)
    assert first.usual_ratio == pytest.approx(8.9 / 16.5, rel=0.02)
    (episode,) = result.episodes
    assert episode.state == "resolved" and len(episode.verdicts) == 5 and episode.side == "candidate"
    assert episode.identity == ("c30", "b30") and episode.closed_by.run == "c35"
    assert episode.confirmed_by.run == "c31"
    assert "the 1 candidate run(s) after it averaging" in episode.confirmed_by.reason
    assert episode.explanation.startswith("candidate run c35 went back") and "resolved after 5" in episode.explanation


def test_one_bad_run_cannot_confirm_itself():
    """A lone 15% dip of the candidate, then normal runs: the baseline run that lands next pairs with the dip in the
    comparison table, but detection judges only the arrived run, so the dip stays an outlier."""
    points = speed_series(40, 0.01, seed=5, candidate_factor=lambda i: 0.85 if i == 30 else 1.0)
    result = evaluate_series(points, SPEED)
    assert next(p for p in points if p.arrived == "baseline" and p.candidate_run == "c30")  # the pair with the dip
    assert verdict_of(result, "c30").state == "outlier" and verdict_of(result, "b31").state == "ok"
    assert "active" not in states(result)
    (episode,) = result.episodes
    assert episode.state == "outlier" and episode.closed_by.run == "c31"
    assert "went back" in episode.explanation
    # the outlier joined the reference once it went back; the median does not move
    assert verdict_of(result, "c39").usual_ratio == pytest.approx(verdict_of(result, "c29").usual_ratio, rel=0.01)


def test_a_dip_right_after_a_merely_suspect_run_does_not_confirm_it():
    """3% noise: a run 7% low is suspected; the 16% dip after it is far out on its own, but the suspected run is not,
    so the two are no level that moved; the next run goes back and both are outliers."""
    rng = np.random.default_rng(9)
    cand = noisy(30, 0.03, rng, 8.9) + [8.9 * 0.93, 8.9 * 0.84, 8.9, 8.9]
    result = evaluate_series(alternating(cand, noisy(34, 0.03, rng, 16.5)), SPEED)
    assert [verdict_of(result, f"c{i}").state for i in range(30, 34)] == ["outlier", "outlier", "ok", "ok"]
    assert "not confirmed yet" in verdict_of(result, "c31").reason
    assert "active" not in states(result)


def test_baseline_rise_says_the_baseline_rose():
    result = evaluate_series(speed_series(34, 0.01, seed=3, baseline_factor=lambda i: 1.15 if i >= 30 else 1.0),
                             SPEED)
    assert [verdict_of(result, run).state for run in ("b30", "b31")] == ["suspected", "active"]
    (episode,) = result.open_episodes
    assert episode.state == "active" and episode.moved == "baseline rose" and episode.identity == ("c29", "b30")
    assert "candidate" not in states(result, "candidate")[30:]  # the candidate's runs stay ok


def test_both_sides_moving_make_an_episode_each():
    result = evaluate_series(speed_series(34, 0.01, seed=4, candidate_factor=lambda i: 0.9 if i >= 30 else 1.0,
                                          baseline_factor=lambda i: 1.1 if i >= 30 else 1.0), SPEED)
    assert sorted(e.moved for e in result.open_episodes) == ["baseline rose", "candidate fell"]
    assert {e.state for e in result.open_episodes} == {"active"}


def test_annotation_restarts_the_reference_of_that_device():
    """An intended 30% drop, annotated at the run where it happened, raises nothing and becomes the new normal."""
    points = speed_series(45, 0.01, seed=6, candidate_factor=lambda i: 0.7 if i >= 30 else 1.0,
                          notes={"c30": "CANN 8.0 -> 8.1: new fused attention off"})
    result = evaluate_series(points, SPEED)
    cand = [v for v in result.verdicts if v.side == "candidate"]
    assert result.episodes == []
    assert [v.state for v in cand[30:35]] == ["insufficient_data"] * 5
    assert "reference restarted" in cand[30].reason
    assert [v.state for v in cand[35:]] == ["ok"] * 10
    assert cand[44].usual_ratio == pytest.approx(0.7 * 8.9 / 16.5, rel=0.02)
    # without the annotation the same series is an active regression
    plain = [Point(p.at, p.candidate, p.baseline, p.candidate_run, p.baseline_run, p.arrived) for p in points]
    assert evaluate_series(plain, SPEED).open_episodes[0].state == "active"


def test_annotation_during_an_active_alert_resolves_it():
    points = speed_series(40, 0.01, seed=7, candidate_factor=lambda i: 0.8 if i >= 30 else 1.0,
                          notes={"c33": "accepted: slower but exact softmax"})
    result = evaluate_series(points, SPEED)
    (episode,) = result.episodes
    assert episode.state == "resolved" and episode.closed_by.run == "c33"
    assert "annotated at candidate run c33" in episode.explanation
    assert states(result, "candidate")[33:] == ["insufficient_data"] * 5 + ["ok"] * 2


def test_insufficient_data_uses_a_static_guard_against_the_previous_run():
    values = [1.0, 1.02, 0.98, 0.6, 0.62, 0.99]  # a 40% fall on the 4th run, confirmed by the 5th, then back
    s = states(evaluate_series(alternating(values, [1.0] * 6), SPEED), "candidate")
    assert s == ["insufficient_data", "insufficient_data", "insufficient_data", "suspected", "active", "resolved"]
    small = alternating([1, 0.9, 0.92], [1.0] * 3)
    assert states(evaluate_series(small, SPEED), "candidate") == ["insufficient_data"] * 3  # inside the 20% guard


def test_a_drop_below_the_practical_threshold_is_not_an_alert():
    """At 0.2% noise a 3% drop is far outside the statistical limit, yet smaller than the 5% that matters."""
    points = speed_series(40, 0.002, seed=8, candidate_factor=lambda i: 0.97 if i >= 30 else 1.0)
    assert states(evaluate_series(points, SPEED), "candidate")[30:] == ["ok"] * 10
    strict = MetricRule(threshold=0.02, mad_floor=0.002)
    assert states(evaluate_series(points, strict), "candidate")[30:32] == ["suspected", "active"]


def test_lower_is_better_metric_alerts_on_a_rise():
    rule = MetricRule(higher_is_better=False)
    cand = [10.0 * (1.15 if i >= 20 else 1.0) * (1 + 0.003 * (-1) ** i) for i in range(22)]
    result = evaluate_series(alternating(cand, [5.0] * 22), rule)
    assert states(result, "candidate")[20:] == ["suspected", "active"]
    assert result.open_episodes[0].moved == "candidate rose"


def test_a_run_at_zero_is_a_total_drop_and_both_at_zero_is_insufficient_data():
    result = evaluate_series(alternating([0.5] * 10 + [0.0, 0.0], [0.5] * 12), MetricRule())
    assert states(result, "candidate")[10:] == ["suspected", "active"]
    assert verdict_of(result, "c10").change_pct == -100 and result.open_episodes[0].moved == "candidate fell"
    zero = evaluate_series(alternating([0.0] * 3, [0.0] * 3), MetricRule())
    assert states(zero) == ["insufficient_data"] * len(zero.verdicts) and zero.episodes == []
    assert "nothing to compare with" in zero.verdicts[0].reason


def test_mcnemar_for_alerts_is_exact_and_one_sided():
    assert mcnemar_p(0, 0, alternative="less") == 1.0
    assert mcnemar_p(0, 6, alternative="less") == pytest.approx(0.5 ** 6)
    assert mcnemar_p(6, 0, alternative="less") == 1.0  # the candidate gaining is never evidence of a drop


# --- properties the store relies on ------------------------------------------------------------------------------

ratios = st.lists(st.floats(min_value=0.5, max_value=1.5), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(ratios, ratios, st.integers(min_value=1, max_value=80))
def test_a_verdict_depends_only_on_earlier_points(cand, base, cut):
    """Re-evaluating after each push never rewrites history, except a suspected run that went back (outlier)."""
    points = alternating(cand, base)
    full = evaluate_series(points, SPEED)
    prefix = evaluate_series(points[:cut], SPEED)
    for before, after in zip(prefix.verdicts, full.verdicts):
        assert before.state == after.state or (before.state == "suspected" and after.state == "outlier")
    assert {e.identity for e in prefix.episodes} <= {e.identity for e in full.episodes}
    assert len(full.verdicts) == len(points)
    for side in ("candidate", "baseline"):  # at most one open episode per device
        assert sum(e.side == side for e in full.open_episodes) <= 1


@settings(max_examples=30, deadline=None)
@given(ratios, ratios, st.randoms(use_true_random=False))
def test_input_order_does_not_matter(cand, base, rnd):
    points = alternating(cand, base)
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
    assert sup.reason == "CANN upgrade in progress" and sup.until == dt.datetime(2025, 4, 1, tzinfo=dt.timezone.utc)
    assert load_config(None).rules == DEFAULT_RULES


def test_default_rules_come_from_the_metric_registry():
    assert set(DEFAULT_RULES) == {"pass_at_1", "first_token_tokens_per_s", "decode_tokens_per_s",
                                  "serving_ttft_ms", "serving_tpot_ms", "output_throughput"}
    assert DEFAULT_RULES["pass_at_1"].paired_alpha == 0.05 and DEFAULT_RULES["decode_tokens_per_s"].higher_is_better
    # serving latencies: a rise is the regression; throughput: a fall
    assert not DEFAULT_RULES["serving_ttft_ms"].higher_is_better and DEFAULT_RULES["output_throughput"].higher_is_better


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
    ("[[suppress]]\nuntil = 2025-04-01T00:00:00Z", "missing required key 'suppress[0].pattern'"),
    ("[[suppress]]\npattern = '*'\nuntil = 2025-04-01T00:00:00Z\nwhy = 'x'", "unknown key 'suppress[0].why'"),
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
    key = SeriesKey("0123456789abcdef", "decode_tokens_per_s", "910B3", "A100", batch_size=8)
    assert str(key) == "0123456789abcdef/decode_tokens_per_s/910B3-vs-A100/bs8"
    until = T0 + dt.timedelta(days=7)
    every_batch = Suppression("*/decode_tokens_per_s/910B3-vs-A100", until)
    assert every_batch.matches(key)
    assert not Suppression("*/decode_tokens_per_s/910B3-vs-A100/bs1", until).matches(key)
    assert not Suppression("*/first_token_tokens_per_s", until).matches(key)
    assert not Suppression(f"{key}/x", until).matches(key)
    assert Suppression("0123*", until).matches(key)
    sups = [Suppression("*/pass_at_1", until), every_batch]
    assert suppressed_by(key, T0, sups) is every_batch
    assert suppressed_by(key, until, sups) is None  # expired at `until`
    assert suppressed_by(SeriesKey(key.fingerprint, "pass_at_1", "910B3", "A100"), T0, sups) is sups[0]
    with pytest.raises(ValueError, match="timezone-aware"):
        suppressed_by(key, T0.replace(tzinfo=None), sups)


def test_a_detector_resumed_from_a_saved_state_judges_as_the_whole_series_does():
    """db.alerts.checkpoint's state of a detector, taken every few points (the store's snapshots), is a copy: feeding
    on leaves it as it was, and a detector resumed from it (through JSON) gives the whole series' later verdicts."""
    import json

    from db.alerts.checkpoint import detector_state, resume
    from db.alerts.detect import Detector

    rng = np.random.default_rng(7)
    points = alternating(noisy(80, 0.02, rng, 8.9, lambda i: 0.85 if 40 <= i < 50 else 1.0),
                         noisy(80, 0.02, rng, 16.5))
    whole = evaluate_series(points, SPEED)
    det, saved = Detector(SPEED), {}
    for i, p in enumerate(points):
        if i % 16 == 0:
            saved[i] = (detector_state(det), json.dumps(detector_state(det)))
        det.feed(p)
    for i, (state, text) in saved.items():
        assert json.dumps(state) == text
        again = resume(json.loads(text), SPEED)
        assert [again.feed(p) for p in points[i:]] == whole.verdicts[i:]
    assert any(v.state == "active" for v in whole.verdicts)
