"""The Overview query (db/overview.py) on SQLite and a real PostgreSQL: a row per job and device pair with runs on
both sides, its latest ratios agree with the comparison table and its sparklines with the trend series, open alerts
and ages are shown, and runs that do not compare fairly say why."""
from __future__ import annotations

import datetime as dt
import random

from db import compare, store, trends
from db.engine import open_store, session_scope
from db.models import Alert
from db.overview import SPARK, overview
from tests.test_store import _run as _imported_run

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def _run(*args, **kwargs) -> dict:
    doc = _imported_run(*args, **kwargs)
    doc.update(source="measured", imported_from=None, missing=[])
    return doc


def _at(hours: float) -> str:
    return (T0 + dt.timedelta(hours=hours)).isoformat()


def _alert(fp: str, state: str, metric: str = "decode_tokens_per_s", pair=("910B3", "A100")) -> Alert:
    return Alert(series=f"{fp}/{metric}/{pair[0]}-vs-{pair[1]}/bs1/{state}", fingerprint=fp, metric=metric,
                 candidate_device=pair[0], baseline_device=pair[1], batch_size=1, opened_candidate_run="c",
                 opened_baseline_run="b", latest_candidate_run="c", latest_baseline_run="b", state=state,
                 reason=f"{state} drop", opened_at=T0, updated_at=T0)


def test_one_row_per_pair_with_ratios_alerts_ages_and_fairness(store_url, reference_docs):
    engine = open_store(store_url)
    a, c = "a" * 16, "c" * 16
    docs = [_run(reference_docs, "A100", _at(1), {1: 10.0, 4: 40.0}, 0.5, a),
            _run(reference_docs, "910B3", _at(2), {1: 5.0, 4: 10.0}, 0.25, a),
            _run(reference_docs, "cpu", _at(3), {1: 1.0}, 0.0, a),
            _run(reference_docs, "910B3", _at(4), {1: 6.0, 4: 12.0}, 0.5, a),
            _run(reference_docs, "910B3", _at(5), {1: 1.0}, 0.5, "b" * 16),  # one device only: no row
            _run(reference_docs, "910B3", _at(6), {4: 8.0}, None, c),
            _run(reference_docs, "A100", _at(7), {4: 16.0, 8: 30.0}, None, c)]
    docs[-1].update(source="imported", imported_from="a published report")
    docs[-1]["perf"][0]["cpu_contention"] = True
    for doc in docs:
        store.push(engine, doc)
    with session_scope(engine) as s:
        s.add_all([_alert(a, "suspected"), _alert(a, "active", "pass_at_1"), _alert(a, "resolved"),
                   _alert(c, "suspected", pair=("A100", "cpu"))])
    with session_scope(engine) as s:
        rows = overview(s, now=T0 + dt.timedelta(hours=10))
        table = compare.build(s, a, "910B3", "A100")
    assert [(r["fingerprint"], r["candidate"], r["baseline"]) for r in rows] == [
        (c, "910B3", "A100"), (a, "910B3", "A100"), (a, "910B3", "cpu"), (a, "A100", "cpu")]
    c_row, a_row, b3_cpu, a100_cpu = rows

    decode = a_row["metrics"]["decode_tokens_per_s"]
    assert a_row["batch_size"] == 1 and decode["ratio"] == table.speed[0]["decode_tokens_per_s"]["ratio"] == 0.6
    assert decode["points"] == [0.5, 0.6] and decode["previous"] == 0.5 and round(decode["change_pct"], 6) == 20.0
    assert a_row["metrics"]["pass_at_1"]["points"] == [0.5, 1.0]
    assert (a_row["candidate_run"], a_row["baseline_run"]) == (docs[3]["run_id"], docs[0]["run_id"])
    assert a_row["alert"]["state"] == "active" and a_row["alert"]["metric"] == "pass_at_1"
    assert a_row["alert"]["open"] == 2  # the resolved one is not open
    assert a_row["age"] == {"910B3": dt.timedelta(hours=6), "A100": dt.timedelta(hours=9)}
    assert a_row["comparable"] and a_row["not_comparable"] == []
    # the cpu run arrived between the 910B3 runs: one point each time either side moved
    assert b3_cpu["metrics"]["decode_tokens_per_s"]["points"] == [5.0, 6.0] and b3_cpu["alert"] is None

    # c: batch size 4 is the only one both timed; the A100 run is imported and timed under contention
    assert c_row["batch_size"] == 4 and c_row["metrics"]["decode_tokens_per_s"]["ratio"] == 0.5
    assert c_row["metrics"]["pass_at_1"] == {"ratio": None, "previous": None, "change_pct": None, "points": []}
    assert not c_row["comparable"] and c_row["not_comparable"] == [
        "the A100 run is imported (published aggregates)", "CPU contention while timing on A100"]
    assert a100_cpu["alert"] is None  # the (A100, cpu) alert is of job c, which has no cpu run


def test_sparklines_are_the_last_points_of_the_trend_series(store_url, reference_docs):
    """Runs arriving out of order, more than the sparkline holds: the Overview reads only each device's recent runs
    and must still give exactly the trend series' last points."""
    engine = open_store(store_url)
    rng = random.Random(7)
    # the A100 side runs less often (its run before the last points lies far back); both sides outgrow RECENT
    plan = [("910B3" if rng.random() < 0.8 else "A100", h) for h in range(6 * SPARK)]
    docs = [_run(reference_docs, device, _at(h), {1: rng.uniform(5, 20)}, rng.choice([0.3, 0.4, 0.5]))
            for device, h in plan]
    rng.shuffle(docs)
    for doc in docs:
        store.push(engine, doc)
    with session_scope(engine) as s:
        (row,) = overview(s)
        series = trends.pair_trends(s, "910B3", "A100")
    for metric, bs in (("decode_tokens_per_s", 1), ("first_token_tokens_per_s", 1), ("pass_at_1", None)):
        full = series[trends.TrendKey("f" * 16, metric, bs)].ratio
        got = row["metrics"][metric]
        assert got["points"] == full[-SPARK:] and got["ratio"] == full[-1] and got["previous"] == full[-2]
