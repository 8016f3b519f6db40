"""Comparison tables: the reference report's ratios from the shipped reference documents, missing sides, n/a."""
from __future__ import annotations

import copy
import csv
import io
import json
import math
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.metrics import ratio
from db import compare, store, tables
from db.engine import open_store, session_scope


def _render(url, fmt, candidate="910B3", baseline="A100", fingerprint=None):
    with session_scope(open_store(url)) as s:
        return tables.render(compare.build(s, fingerprint, candidate, baseline), fmt)


def test_reference_ratios(store_url, reference_docs):
    engine = open_store(store_url)
    for doc in reference_docs:
        store.push(engine, doc)
    md = _render(store_url, "markdown")
    assert "| HumanEval problems | 164 | 164 | 1 |" in md
    assert "| passed | 54 | 53 | 1.0189 |" in md
    assert "| pass@1 | 0.3293 | 0.3232 | 1.0189 |" in md
    assert "| 910B3 | 1 | 1.2386 | 8.932 |" in md
    assert "| A100 | 1 | 18.123 | 16.551 |" in md
    assert "| ratio | 1 | 0.0683 | 0.5397 |" in md
    rows = list(csv.reader(io.StringIO(_render(store_url, "csv"))))
    assert ["ratio", "1", "0.0683", "0.5397"] in rows and ["passed", "54", "53", "1.0189"] in rows
    data = json.loads(_render(store_url, "json"))
    speed = data["speed"][0]
    assert speed["first_token_tokens_per_s"]["ratio"] == pytest.approx(1.2386 / 18.123)
    assert speed["decode_tokens_per_s"]["ratio"] == pytest.approx(8.932 / 16.551)
    assert data["accuracy"][1]["ratio"] == pytest.approx(54 / 53)


def test_missing_side_is_missing_not_zero(reference_docs, tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    store.push(open_store(url), reference_docs[0])  # 910B3 only
    md = _render(url, "markdown", fingerprint=reference_docs[0]["job"]["fingerprint"])
    assert "| passed | 54 | missing | n/a |" in md
    assert "| A100 | 1 | missing | missing |" in md
    assert "- A100: no run" in md


def test_zero_baseline_gives_na(reference_docs, tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    engine = open_store(url)
    base = copy.deepcopy(reference_docs[1])
    base["run_id"] = str(uuid.uuid4())
    base["humaneval"].update(passed=0, pass_at_k={"1": 0.0})
    store.push(engine, reference_docs[0])
    store.push(engine, base)
    assert "| passed | 54 | 0 | n/a |" in _render(url, "markdown")


def test_latest_run_wins(reference_docs, tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    engine = open_store(url)
    newer = copy.deepcopy(reference_docs[0])
    newer.update(run_id=str(uuid.uuid4()), finished_at="2025-01-01T00:00:00+00:00")
    newer["humaneval"]["passed"] = 60
    for doc in (*reference_docs, newer):
        store.push(engine, doc)
    assert "| passed | 60 | 53 |" in _render(url, "markdown")


@given(st.one_of(st.none(), st.floats(0, 1e6)), st.one_of(st.none(), st.floats(0, 1e6)))
def test_ratio_is_none_exactly_when_undefined(c, b):
    r = ratio(c, b)
    assert (r is None) == (c is None or b is None or b == 0 or not math.isfinite(c / b))
    if r is not None:
        assert r >= 0 and r * b == pytest.approx(c)
