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


# --- energy: tokens per joule per batch size, with the ratio; "n/a" and the reason, never a zero -----------------

def _with_energy(doc: dict, records: list[dict] | None) -> dict:
    doc = copy.deepcopy(doc)
    doc["run_id"] = str(uuid.uuid4())
    if records is not None:
        doc["extra"] = {"energy": records}
    return doc


def _metered(tokens_per_joule: float, source: str, interval_s: float) -> dict:
    return {"batch_size": 1, "available": True, "reason": None, "source": source, "interval_s": interval_s,
            "devices": 2, "first_token_j_per_token": 3.0, "decode_j_per_token": 1 / tokens_per_joule,
            "tokens_per_joule": tokens_per_joule}


NO_METER = "no RAPL: /sys/class/powercap does not exist on this host (no powercap driver; usual in a VM)"


def _push(url: str, *docs: dict) -> None:
    engine = open_store(url)
    for doc in docs:
        store.push(engine, doc)


def test_energy_ratio_in_markdown_csv_and_json(store_url, reference_docs):
    _push(store_url, _with_energy(reference_docs[0], [_metered(2.5, "npu-smi", 1.0)]),
          _with_energy(reference_docs[1], [_metered(2.0, "nvml energy counter", 0.05)]))
    md = _render(store_url, "markdown")
    assert "| 1 | decode energy efficiency (tokens/J) | 2.5 | 2 | 1.2500 | higher |" in md
    assert "910B3: npu-smi, a reading every 1 s, 2 devices; A100: nvml energy counter, a reading every 0.05 s" in md
    rows = list(csv.reader(io.StringIO(_render(store_url, "csv"))))
    assert ["batch size", "metric", "910B3", "A100", "ratio", "better"] in rows
    assert ["1", "decode energy efficiency (tokens/J)", "2.5", "2", "1.2500", "higher"] in rows
    energy = json.loads(_render(store_url, "json"))["energy"]
    assert energy[0]["batch_size"] == 1
    assert energy[0]["tokens_per_joule"] == {"candidate": 2.5, "baseline": 2.0, "ratio": pytest.approx(1.25),
                                             "why": {}}


def test_energy_side_without_a_meter_is_na_with_the_reason(reference_docs, tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    _push(url, _with_energy(reference_docs[0], [_metered(2.5, "npu-smi", 1.0)]),
          _with_energy(reference_docs[1], [{"batch_size": 1, "available": False, "reason": NO_METER}]))
    md = _render(url, "markdown")
    assert f"| 1 | decode energy efficiency (tokens/J) | 2.5 | n/a ({NO_METER}) | n/a | higher |" in md
    rows = list(csv.reader(io.StringIO(_render(url, "csv"))))
    assert ["1", "decode energy efficiency (tokens/J)", "2.5", f"n/a ({NO_METER})", "n/a", "higher"] in rows
    cell = json.loads(_render(url, "json"))["energy"][0]["tokens_per_joule"]
    assert cell == {"candidate": 2.5, "baseline": None, "ratio": None, "why": {"baseline": NO_METER}}
    assert "| 0 |" not in md and ", 0," not in _render(url, "csv")


def test_energy_phase_too_short_gives_the_phase_reason(reference_docs, tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    short = {**_metered(2.0, "npu-smi", 1.0), "decode_j_per_token": None, "tokens_per_joule": None,
             "why": {"decode": "900 ms in all, under two sampling intervals"}}
    _push(url, _with_energy(reference_docs[0], [short]),
          _with_energy(reference_docs[1], [_metered(2.0, "nvml energy counter", 0.05)]))
    assert "| n/a (decode: 900 ms in all, under two sampling intervals) | 2 | n/a |" in _render(url, "markdown")


def test_runs_without_energy_records(reference_docs, tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    _push(url, *reference_docs)  # documents from before power sampling: no extra.energy at all
    md = _render(url, "markdown")
    assert "Energy" not in md and "tokens/J" not in md
    assert json.loads(_render(url, "json"))["energy"] == []
    assert "tokens/J" not in _render(url, "csv")
    # one side sampled, the other is an older document: that side is n/a with the reason
    _push(url, _with_energy(reference_docs[0], [_metered(2.5, "npu-smi", 1.0)]))
    md = _render(url, "markdown")
    assert ("| 2.5 | n/a (the run has no energy records (it predates power sampling, or was imported)) | n/a |"
            in md)


def test_job_without_eager_timing_has_no_empty_speed_table(reference_docs, tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    docs = []
    for doc in reference_docs:  # a serving-only job times no batch sizes: no perf records
        doc = _with_energy(doc, None)
        doc["perf"] = []
        docs.append(doc)
    _push(url, *docs)
    md = _render(url, "markdown")
    assert tables.NO_SPEED in md and "| device | batch size |" not in md
    rows = list(csv.reader(io.StringIO(_render(url, "csv"))))
    assert ["device", "batch size"] not in [r[:2] for r in rows] and rows[-1][0] == "pass@1"
    assert json.loads(_render(url, "json"))["speed"] == []


# --- token agreement and per-layer precision in every format; `runner compare` --threshold and device names -------

def _with_precision(doc: dict, scale: float, tokens: list[int]) -> dict:
    """`doc` with a two-layer precision section (the second layer's sketch `scale` times a fixed one) and a token
    probe of one prompt."""
    import numpy as np

    from core import precision, rundoc

    doc = copy.deepcopy(doc)
    sketch = np.random.default_rng(0).standard_normal(64)
    layers = [precision.layer_record(name, elements=640, total=1.0, total_sq=float(sketch @ sketch), max_abs=3.0,
                                     nan=0, inf=0, sketch_values=sketch * s) for name, s in (("layers.0", 1.0),
                                                                                             ("norm", scale))]
    doc.update(format=rundoc.FORMAT, run_id=str(uuid.uuid4()),
               precision=precision.section(tasks=["HumanEval/0"], tokens=[10], size=64, layers=layers, logits=None,
                                           seconds=1.0),
               token_probe={"tasks": ["HumanEval/0"], "tokens": [tokens]})
    return rundoc.validate(doc)


def _precision_store(url: str, reference_docs: list[dict]) -> None:
    _push(url, _with_precision(reference_docs[0], 1.05, [1, 2, 3, 9]), _with_precision(reference_docs[1], 1.0,
                                                                                        [1, 2, 3, 4]))


def test_csv_has_the_token_agreement_and_the_precision_section(reference_docs, tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    _precision_store(url, reference_docs)
    rows = list(csv.reader(io.StringIO(_render(url, "csv"))))
    assert ["greedy token agreement", "probe tokens", "first divergence"] in rows
    assert ["75.00%", "4", "first divergence at token 3 of HumanEval/0"] in rows
    assert ["per-layer precision", "threshold", "first layer at or over"] in rows
    assert ["910B3 vs A100", "0.01", "norm"] in rows
    assert ["layer", "relative error", "cosine", "max abs 910B3", "max abs A100"] in rows
    assert [r[:2] for r in rows if r and r[0] in ("layers.0", "norm (first over)")] == [
        ["layers.0", "0.00e+00"], ["norm (first over)", "5.00e-02"]]
    md, data = _render(url, "markdown"), json.loads(_render(url, "json"))  # the same figures as markdown and JSON
    assert "| norm (first over) | 5.00e-02 |" in md and "Greedy token agreement (4 probe tokens): 75.00%" in md
    assert data["precision"]["first_over"] == "norm" and data["token_agreement"]["share"] == 0.75


def test_compare_command_threshold_and_unknown_devices(reference_docs, tmp_path):
    from typer.testing import CliRunner

    from runner.cli import app

    url = f"sqlite:///{tmp_path / 's.db'}"
    _precision_store(url, reference_docs)
    shown = CliRunner().invoke(app, ["compare", "--db", url, "--threshold", "0.1", "-f", "csv"])
    assert shown.exit_code == 0, shown.output
    assert ["910B3 vs A100", "0.1", "none"] in list(csv.reader(io.StringIO(shown.output)))
    low = CliRunner().invoke(app, ["compare", "--db", url, "--threshold", "1e-3"])
    assert "first layer at or over 0.001: **norm**" in low.output
    bad = [(["--threshold", v], f"--threshold must be a number > 0, not {v}") for v in ("0", "-0.01", "nan", "abc")]
    bad += [(["--candidate", "foo"], "no run of device foo in the store (devices with runs: 910B3, A100)"),
            (["--candidate", "foo", "--baseline", "bar"], "no run of device foo or bar in the store")]
    for args, message in bad:
        result = CliRunner().invoke(app, ["compare", "--db", url, *args])
        assert result.exit_code == 2 and message in result.output and result.output.count("\n") == 1, result.output
    empty = CliRunner().invoke(app, ["compare", "--db", f"sqlite:///{tmp_path / 'empty.db'}"])
    assert empty.exit_code == 2 and "no job has runs on both 910B3 and A100" in empty.output
