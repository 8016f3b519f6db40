"""Regression alerts on serving metrics: a series per alerted metric (core.metrics.SERVING_ALERTS) and load level,
judged by the same rules as the eager ones. Serving runs of both devices (measured once against the stub server,
then re-dated with their latencies set) with a sustained TTFT rise on the 910B3 at one concurrency level: an active
alert names that level and metric, and no other level or metric alerts."""
from __future__ import annotations

import copy
import datetime as dt
import json
import random
import uuid

import pytest
from typer.testing import CliRunner

from db import store
from db.alerts.config import DEFAULT_RULES
from db.alerts.deliver import build_payload, evaluate_and_deliver
from db.alerts.detect import Point, evaluate_series
from db.alerts.listing import alerts
from db.alerts.series import SeriesKey
from db.engine import open_store, session_scope
from db.models import AlertSeriesState
from runner import devices, serving
from runner.cli import app
from runner.serving.stub import Stub, serve_in_thread
from runner.spec import parse_spec

T0 = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)
USUAL = {"910B3": {"serving_ttft_ms": 40.0, "serving_tpot_ms": 12.0, "output_throughput": 300.0},
         "A100": {"serving_ttft_ms": 25.0, "serving_tpot_ms": 8.0, "output_throughput": 450.0}}


@pytest.fixture(scope="module")
def measured() -> dict:
    url, stop = serve_in_thread(Stub(("ok",) * 4))
    try:
        spec = parse_spec({"name": "served", "humaneval": None, "model": {"name": "tiny-random-llama"},
                           "serving": {"requests": 4, "input_tokens": 8, "output_tokens": 4, "concurrency": [1, 2],
                                       "rates": [100.0], "engine": {"name": "vllm"}}})
        return serving.run(spec, devices.detect("cpu"), url)
    finally:
        stop()


def _run(measured: dict, device: str, at: dt.datetime, rng: random.Random, slower: float = 1.0) -> dict:
    """The measured document as a run of `device` finished at `at`; at concurrency 2 its TTFT times `slower`."""
    doc = copy.deepcopy(measured)
    doc.update(run_id=str(uuid.uuid4()), started_at=(at - dt.timedelta(minutes=5)).isoformat(),
               finished_at=at.isoformat())
    doc["device"] = {"class": device, "type": "npu" if device == "910B3" else "cuda", "name": device, "count": 1}
    for lv in doc["serving"]["levels"]:
        for name, usual in USUAL[device].items():
            v = usual * rng.lognormvariate(0, 0.01) * (
                slower if name == "serving_ttft_ms" and (lv["mode"], lv["level"]) == ("concurrency", 2) else 1.0)
            if isinstance(lv[name], dict):  # a latency distribution: scale it to the new median
                lv[name] = {k: q * v / lv[name]["median"] for k, q in lv[name].items()}
            else:
                lv[name] = v
    return doc


def test_a_ttft_rise_at_one_concurrency_alerts_there_only(store_url, measured):
    engine = open_store(store_url)
    rng = random.Random(3)
    fp = measured["job"]["fingerprint"]
    for day in range(14):
        at = T0 + dt.timedelta(days=day)
        store.push(engine, _run(measured, "A100", at, rng))
        store.push(engine, _run(measured, "910B3", at + dt.timedelta(hours=1), rng, 1.3 if day >= 11 else 1.0))
        evaluate_and_deliver(engine, [fp])  # as `runner push` does
    result = CliRunner().invoke(app, ["alerts", "check", "--db", store_url])
    assert result.exit_code == 1, result.output
    listed = json.loads(CliRunner().invoke(app, ["alerts", "list", "--all", "--format", "json", "--db", store_url])
                        .stdout)
    series = f"{fp}/serving_ttft_ms/910B3-vs-A100/c2"
    assert [(a["series"], a["state"], a["moved"]) for a in listed] == [(series, "active", "candidate rose")]
    with session_scope(engine) as s:
        (row,) = alerts(s, series)
        # every level both devices served has its series (and a checkpoint to resume them from)
        (ckpt,) = s.query(AlertSeriesState).all()
        paths = set(ckpt.data["series"])
    assert row["level"] == "c2" and row["metric"] == "serving_ttft_ms" and row["batch_size"] is None
    assert row["change_pct"] > 25  # a latency rise: the ratio 910B3 / A100 went up
    assert {f"{fp}/{m}/910B3-vs-A100/{lv}" for m in ("serving_ttft_ms", "serving_tpot_ms", "output_throughput")
            for lv in ("c1", "c2", "r100")} <= paths


def test_the_webhook_names_the_level():
    points = [Point(T0 + dt.timedelta(hours=i), 40.0 * (1.3 if i >= 16 else 1.0) * (1 + 0.002 * (i % 3)), 25.0,
                    f"c{i}", "b0") for i in range(20)]
    (episode,) = evaluate_series(points, DEFAULT_RULES["serving_ttft_ms"]).open_episodes
    key = SeriesKey("0123456789abcdef", "serving_ttft_ms", "910B3", "A100", level="c2")
    payload = build_payload(key, episode, None, job_name="served")
    assert payload["level"] == "c2" and payload["series"].endswith("/910B3-vs-A100/c2")
    assert "(910B3 vs A100, concurrency 2)" in payload["text"] and "candidate rose" in payload["text"]
