"""The dashboard's Serving page through Streamlit's AppTest: the latency-throughput curve and the per-level table of two
devices' serving runs (measured against the stub server), and what it says when a store has none."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from db import store
from db.engine import open_store
from runner import devices, serving
from runner.serving.stub import Stub, serve_in_thread
from runner.spec import parse_spec

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")
PAGE = "views/serving.py"


@pytest.fixture(autouse=True)
def _fresh_caches():
    st.cache_data.clear()
    st.cache_resource.clear()


def page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60).run()
    return at.switch_page(PAGE).run()


def serving_runs() -> list[dict]:
    url, stop = serve_in_thread(Stub(("ok", "ok", "ok", "500")))
    try:
        spec = parse_spec({"name": "served", "humaneval": None, "model": {"name": "tiny-random-llama"},
                           "serving": {"requests": 4, "input_tokens": 8, "output_tokens": 4, "concurrency": [1, 2],
                                       "rates": [100.0], "engine": {"name": "vllm"}}})
        a100 = serving.run(spec, devices.detect("cpu"), url)
    finally:
        stop()
    npu = json.loads(json.dumps(a100)) | {"run_id": "00000000-0000-4000-8000-0000000000b3"}
    npu["device"] = {"class": "910B3", "type": "npu", "name": "Ascend910B3", "count": 1}
    a100["device"] = {"class": "A100", "type": "cuda", "name": "NVIDIA A100-SXM4-80GB", "count": 1}
    return [npu, a100]


def test_curve_and_table_per_level(store_url, monkeypatch):
    eng = open_store(store_url)
    for doc in serving_runs():
        store.push(eng, doc)
    monkeypatch.setenv("DEVCOMPARE_DB_URL", store_url)
    at = page()
    assert not at.exception
    text = "\n".join(str(m.value) for m in at.markdown)
    assert "**910B3**: vllm (version stub)" in text and "**A100**: vllm (version stub)" in text
    rows = [list(at.table[0].value.columns)] + at.table[0].value.astype(str).values.tolist()
    assert rows[0][:3] == ["level", "device", "TTFT median (ms)"]
    assert [r[:2] for r in rows[1:4]] == [["concurrency 1", "910B3"], ["concurrency 1", "A100"],
                                          ["concurrency 1", "ratio"]]
    assert rows[3][2] == "1"  # the same measurements on both sides
    assert any(r[0] == "100 req/s" for r in rows[1:])
    assert at.get("vega_lite_chart"), "no latency-throughput chart"
    failures = at.table[1].value.astype(str).values.tolist()
    assert {r[2] for r in failures} == {"HTTP 500"}  # every fourth request failed, reasons kept per level


def test_a_store_without_serving_runs_says_how_to_get_them(tmp_path, reference_docs, monkeypatch):
    url = f"sqlite:///{tmp_path / 'eager.db'}"
    for doc in reference_docs:
        store.push(open_store(url), doc)
    monkeypatch.setenv("DEVCOMPARE_DB_URL", url)
    at = page()
    assert not at.exception
    assert "No serving runs yet" in at.info[0].value and "runner serve --device cpu" in at.info[0].value
