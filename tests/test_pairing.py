"""One pairing rule (db/pairing.py) for the comparison table, the trend charts and the alert series: when two runs of
one device finish in the same second, all three take the one that reached the store last."""
from __future__ import annotations

import copy
import time
import uuid

from sqlalchemy import select

from db import compare, pairing, store, trends
from db.alerts.series import SeriesKey, series_points
from db.engine import open_store, session_scope
from db.models import Run


def _push_copy(engine, doc: dict, decode: float) -> str:
    doc = copy.deepcopy(doc)
    doc["run_id"] = str(uuid.uuid4())
    doc["perf"][0]["decode_tokens_per_s"]["median"] = decode
    store.push(engine, doc)
    time.sleep(0.01)  # pushed_at orders the tie
    return doc["run_id"]


def test_tied_finish_times_pair_the_same_run_everywhere(store_url, reference_docs):
    engine = open_store(store_url)
    cand_doc, base_doc = reference_docs  # the reference examples share a finished_at
    assert cand_doc["finished_at"] == base_doc["finished_at"]
    store.push(engine, base_doc)
    first = _push_copy(engine, cand_doc, 8.0)
    second = _push_copy(engine, cand_doc, 9.0)  # same finished_at, pushed later
    with session_scope(engine) as s:
        table = compare.build(s, cand_doc["job"]["fingerprint"], "910B3", "A100")
        series = trends.pair_trends(s, "910B3", "A100")
        runs = list(s.scalars(select(Run)))
        key = SeriesKey(cand_doc["job"]["fingerprint"], "decode_tokens_per_s", "910B3", "A100", 1)
        points = series_points(runs, key, {})
    assert table.candidate_run.id == second
    assert table.speed[0]["decode_tokens_per_s"]["candidate"] == 9.0
    decode = next(ser for key, ser in series.items() if key.metric == "decode_tokens_per_s")
    assert decode.candidate_run[-1] == second and decode.candidate[-1] == 9.0
    assert [c for _a, c, _b in pairing.paired(runs, "910B3", "A100")][-1].id == second
    assert points[-1].candidate_run == second and points[-1].candidate == 9.0  # the alert series agrees
    assert first != second


def test_paired_yields_each_arrival_with_the_latest_of_each_side():
    class R:
        def __init__(self, id, device, finished, pushed):
            self.id, self.device_class, self.finished_at, self.pushed_at = id, device, finished, pushed

    import datetime as dt
    t = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    s = dt.timedelta(seconds=1)
    runs = [R("b1", "A100", t, t), R("c1", "910B3", t + s, t + s), R("c2", "910B3", t + s, t + 3 * s),
            R("x", "cpu", t + s, t), R("b2", "A100", t + 2 * s, t + 2 * s)]
    got = [(a.id, c.id, b.id) for a, c, b in pairing.paired(reversed(runs), "910B3", "A100")]
    # c2 ties c1 on finished_at and was pushed later; b2 finished later than both
    assert got == [("c1", "c1", "b1"), ("c2", "c2", "b1"), ("b2", "c2", "b2")]
