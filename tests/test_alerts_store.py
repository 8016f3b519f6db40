"""Regression alerts through the store and the CLI: series built from pushed run documents, states stored,
`runner alerts check` exit codes, ack, annotate, and the webhook on a state change."""
from __future__ import annotations

import copy
import datetime as dt
import http.server
import json
import random
import threading
import uuid

import pytest
from typer.testing import CliRunner

from db import store
from db.engine import open_store, session_scope
from db.models import Alert
from core import rundoc
from runner.cli import app

runner = CliRunner()
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def _doc(template: dict, at: dt.datetime, first: float, decode: float) -> dict:
    doc = copy.deepcopy(template)
    doc.update(run_id=str(uuid.uuid4()), started_at=at.isoformat(), finished_at=at.isoformat())
    doc["perf"][0]["first_token_tokens_per_s"] = {"median": first}
    doc["perf"][0]["decode_tokens_per_s"] = {"median": decode}
    return doc


def _push_pairs(url, reference_docs, cand_factors, base_factors=None, noise=0.01, seed=0, start=0):
    """One 910B3 run and one A100 run per day; decode speeds scaled by the given factors with lognormal noise."""
    rng = random.Random(seed)
    engine = open_store(url)
    base_factors = base_factors or [1.0] * len(cand_factors)
    ids = []
    for i, (cf, bf) in enumerate(zip(cand_factors, base_factors)):
        day = T0 + dt.timedelta(days=start + i)
        b = _doc(reference_docs[1], day, 18.123, 16.551 * bf * rng.lognormvariate(0, noise))
        c = _doc(reference_docs[0], day + dt.timedelta(hours=1), 1.2386, 8.932 * cf * rng.lognormvariate(0, noise))
        for d in (b, c):
            store.push(engine, d)
        ids.append(c["run_id"])
    return ids


def _check(url):
    return runner.invoke(app, ["alerts", "check", "--db", url])


def _decode_alerts(url):
    with session_scope(open_store(url)) as s:
        return [(a.state, a.moved) for a in s.query(Alert).filter(Alert.metric == "decode_tokens_per_s")]


def test_stable_series_raises_nothing(store_url, reference_docs):
    _push_pairs(store_url, reference_docs, [1.0] * 12, noise=0.03 / 2 ** 0.5, seed=1)
    result = _check(store_url)
    assert result.exit_code == 0, result.output
    assert "no active regression" in result.output
    assert [s for s, _ in _decode_alerts(store_url) if s == "active"] == []


def test_candidate_drop_suspected_then_active_and_ack(store_url, reference_docs):
    _push_pairs(store_url, reference_docs, [1.0] * 8)
    _push_pairs(store_url, reference_docs, [0.9], start=8, seed=2)
    assert _check(store_url).exit_code == 0
    assert _decode_alerts(store_url) == [("suspected", "candidate fell")]
    _push_pairs(store_url, reference_docs, [0.9], start=9, seed=3)
    result = _check(store_url)
    assert result.exit_code == 1, result.output
    assert "active regression" in result.output and "candidate fell" in result.output
    assert _decode_alerts(store_url) == [("active", "candidate fell")]
    with session_scope(open_store(store_url)) as s:
        alert_id = s.query(Alert).filter(Alert.metric == "decode_tokens_per_s").one().id
    assert runner.invoke(app, ["alerts", "ack", str(alert_id), "--db", store_url]).exit_code == 0
    assert _check(store_url).exit_code == 0  # acknowledged: listed, no longer failing CI
    listed = runner.invoke(app, ["alerts", "list", "--db", store_url])
    assert "active" in listed.output and "yes" in listed.output


def test_baseline_rise_says_so(tmp_path, reference_docs):
    url = f"sqlite:///{tmp_path / 's.db'}"
    _push_pairs(url, reference_docs, [1.0] * 10, base_factors=[1.0] * 8 + [1.12, 1.12])
    assert _check(url).exit_code == 1
    assert _decode_alerts(url) == [("active", "baseline rose")]


def test_annotation_restarts_the_baseline(tmp_path, reference_docs):
    url = f"sqlite:///{tmp_path / 's.db'}"
    _push_pairs(url, reference_docs, [1.0] * 8)
    ids = _push_pairs(url, reference_docs, [0.85, 0.85], start=8, seed=4)
    assert _check(url).exit_code == 1
    result = runner.invoke(app, ["alerts", "annotate", ids[0], "--note", "CANN 8.0 -> 8.1", "--db", url])
    assert result.exit_code == 0, result.output
    assert _check(url).exit_code == 0
    assert "active" not in [s for s, _ in _decode_alerts(url)]


def test_push_evaluates_and_webhook_reaches_a_real_server(tmp_path, reference_docs, monkeypatch):
    from runner.webhook import SIGNATURE_HEADER, verify

    received = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((body, self.headers[SIGNATURE_HEADER]))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("DEVCOMPARE_WEBHOOK_URL", f"http://127.0.0.1:{server.server_port}/hook")
    monkeypatch.setenv("DEVCOMPARE_WEBHOOK_SECRET", "s3cret")
    url = f"sqlite:///{tmp_path / 's.db'}"
    try:
        _push_pairs(url, reference_docs, [1.0] * 8)
        files = []
        for i, doc in enumerate(_push_docs_only(reference_docs, [0.88, 0.88], start=8)):
            path = tmp_path / f"run{i}.json"
            rundoc.write(doc, path)
            files.append(str(path))
        result = runner.invoke(app, ["push", "--db", url, *files])
        assert result.exit_code == 0, result.output
        assert "-> active" in result.output
    finally:
        server.shutdown()
    assert len(received) == 1  # suspected is not sent; entering active is, once
    body, signature = received[0]
    assert verify(body, signature, "s3cret")
    payload = json.loads(body)
    assert "candidate fell" in json.dumps(payload) and payload["text"]


def _push_docs_only(reference_docs, factors, start):
    docs = []
    for i, f in enumerate(factors):
        day = T0 + dt.timedelta(days=start + i)
        docs.append(_doc(reference_docs[1], day, 18.123, 16.551))
        docs.append(_doc(reference_docs[0], day + dt.timedelta(hours=1), 1.2386, 8.932 * f))
    return docs


@pytest.mark.parametrize("args, fragment", [
    (["alerts", "ack", "999"], "no alert with id 999"),
    (["alerts", "check", "--pairs", "910B3"], "expected CANDIDATE:BASELINE"),
    (["alerts", "annotate", "nope", "--note", "x"], "no run with id nope"),
])
def test_alert_usage_errors(args, fragment):
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and fragment in result.output
