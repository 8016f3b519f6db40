"""Regression alerts through the store and the CLI: runs of two devices pushed alternately (as two fleets of hosts
push them), series built by db.alerts.series, states stored, `runner alerts check` exit codes, list (table and
JSON), ack, annotate, and the webhook on a state change."""
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

from core import rundoc
from db import store
from db.alerts.config import DEFAULT_RULES
from db.alerts.deliver import evaluate_and_deliver
from db.alerts.detect import evaluate_series
from db.alerts.series import SeriesKey, series_points
from db.engine import open_store, session_scope
from db.models import Alert, Run
from runner.cli import app

runner = CliRunner()
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
CAND, BASE = 8.932, 16.551  # decode tokens/s of the reference report (910B3, A100)


def _doc(template: dict, at: dt.datetime, first: float, decode: float) -> dict:
    doc = copy.deepcopy(template)
    doc.update(run_id=str(uuid.uuid4()), started_at=at.isoformat(), finished_at=at.isoformat())
    doc["perf"][0]["first_token_tokens_per_s"] = {"median": first}
    doc["perf"][0]["decode_tokens_per_s"] = {"median": decode}
    return doc


def _push_pairs(url, reference_docs, cand_factors, base_factors=None, noise=0.01, seed=0, start=0):
    """One A100 run, then one 910B3 run, per day; decode speeds scaled by the factors, with lognormal noise."""
    rng = random.Random(seed)
    engine = open_store(url)
    base_factors = base_factors or [1.0] * len(cand_factors)
    ids = []
    for i, (cf, bf) in enumerate(zip(cand_factors, base_factors)):
        day = T0 + dt.timedelta(days=start + i)
        b = _doc(reference_docs[1], day, 18.123, BASE * bf * rng.lognormvariate(0, noise))
        c = _doc(reference_docs[0], day + dt.timedelta(hours=1), 1.2386, CAND * cf * rng.lognormvariate(0, noise))
        for d in (b, c):
            store.push(engine, d)
        ids.append(c["run_id"])
    return ids


def _uneven(reference_docs, n_base, factor=lambda device, k: 1.0, noise=0.01, seed=0) -> list[tuple[str, int, dict]]:
    """(device, k, run document): two 910B3 runs (k = 0, 1, ...) for every A100 run (k = 0, 2, ...), on whole hours
    so that runs of both devices share finished_at, and every fifth A100 run rerun in the same second (k + 1); in
    finished_at order, ties pushed in a shuffled order."""
    rng = random.Random(seed)
    events = []
    for k in range(2 * n_base):
        events.append((T0 + dt.timedelta(hours=6 * k), "910B3", k))
    for k in range(n_base):
        events.append((T0 + dt.timedelta(hours=12 * k), "A100", 2 * k))
        if k % 5 == 4:
            events.append((T0 + dt.timedelta(hours=12 * k), "A100", 2 * k + 1))
    rng.shuffle(events)
    events.sort(key=lambda e: e[0])
    docs = []
    for at, device, k in events:
        template, level = (reference_docs[0], CAND) if device == "910B3" else (reference_docs[1], BASE)
        docs.append((device, k, _doc(template, at, 1.0, level * factor(device, k) * rng.lognormvariate(0, noise))))
    return docs


def _check(url):
    return runner.invoke(app, ["alerts", "check", "--db", url])


def _decode_alerts(url):
    with session_scope(open_store(url)) as s:
        return [(a.state, a.moved) for a in s.query(Alert).filter(Alert.metric == "decode_tokens_per_s")
                .order_by(Alert.id)]


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
    listed = json.loads(runner.invoke(app, ["alerts", "list", "--format", "json", "--db", store_url]).stdout)
    assert "run(s) after it averaging" in listed[0]["reason"]  # the why: the later runs' mean, its limit
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


def test_a_lone_dip_stays_an_outlier_though_the_next_a100_run_pairs_with_it(tmp_path, reference_docs):
    """The comparison pairs the dipped 910B3 run with the next A100 run too; that point reuses the dip, so it is no
    evidence: only the next 910B3 run settles it, and it went back."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    engine = open_store(url)
    _push_pairs(url, reference_docs, [1.0] * 10)
    dip = _push_pairs(url, reference_docs, [0.85], start=10, seed=5)[0]
    evaluate_and_deliver(engine, None)
    assert _decode_alerts(url) == [("suspected", "candidate fell")]
    nxt = _doc(reference_docs[1], T0 + dt.timedelta(days=11), 18.123, BASE)  # pairs with the dip
    store.push(engine, nxt)
    evaluate_and_deliver(engine, None)
    assert _decode_alerts(url) == [("suspected", "candidate fell")]
    _push_pairs(url, reference_docs, [1.0] * 3, start=11, seed=6)
    assert _check(url).exit_code == 0
    assert _decode_alerts(url) == [("outlier", "candidate fell")]
    listed = json.loads(runner.invoke(app, ["alerts", "list", "--all", "--format", "json", "--db", url]).stdout)
    (alert,) = [a for a in listed if "decode" in a["series"]]
    assert "went back" in alert["reason"] and "outlier" in alert["reason"]
    with session_scope(engine) as s:
        assert s.query(Alert).filter(Alert.metric == "decode_tokens_per_s").one().opened_candidate_run == dip


@pytest.mark.parametrize("side, moved", [("910B3", "candidate fell"), ("A100", "baseline rose")])
def test_a_real_drop_of_either_side_at_uneven_rates_with_ties(tmp_path, reference_docs, side, moved):
    """From the 30th run of `side` on, it is 15% worse; pushed with uneven rates, shared finish times and reruns,
    the alert turns active on the second bad run of that side, names that side, and the other device's runs stay ok."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    engine = open_store(url)
    worse = 0.85 if side == "910B3" else 1 / 0.85
    runs = _uneven(reference_docs, 24, lambda device, k: worse if device == side and k >= 30 else 1.0, seed=7)
    bad = [doc["run_id"] for device, k, doc in runs if device == side and k >= 30]
    states_after_bad = []
    for _, _, doc in runs:
        store.push(engine, doc)
        evaluate_and_deliver(engine, None)  # as `runner push` does after each push
        if doc["run_id"] in bad[:2]:
            states_after_bad.append(_decode_alerts(url))
    assert states_after_bad == [[("suspected", moved)], [("active", moved)]]
    assert _check(url).exit_code == 1
    assert _decode_alerts(url) == [("active", moved)]


def test_judging_after_every_push_leaves_the_rows_judging_once_leaves(tmp_path, reference_docs):
    runs = _uneven(reference_docs, 20, lambda device, k: 0.85 if device == "910B3" and k in (12, 25, 26, 27) else 1.0,
                   noise=0.03, seed=8)
    rows = []
    for every_push in (True, False):
        engine = open_store(f"sqlite:///{tmp_path / f'{every_push}.db'}")
        for _, _, doc in runs:
            store.push(engine, doc)
            if every_push:
                evaluate_and_deliver(engine, None)
        evaluate_and_deliver(engine, None)
        with session_scope(engine) as s:
            rows.append(sorted((a.series, a.opened_candidate_run, a.opened_baseline_run, a.state, a.moved, a.reason)
                               for a in s.query(Alert)))
    assert rows[0] == rows[1] and {r[3] for r in rows[0]} >= {"outlier", "resolved"}


def test_series_points_follow_the_pairing_order_on_tied_finish_times(tmp_path, reference_docs):
    """Two 910B3 runs finish in the same second: the one pushed later is the later point (db.pairing), whatever
    their ids, and each run is judged once, by the point it made."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    engine = open_store(url)
    docs = [_doc(reference_docs[1], T0, 18.0, BASE), _doc(reference_docs[0], T0, 1.2, CAND),
            _doc(reference_docs[0], T0, 1.2, CAND * 0.99)]
    docs[1]["run_id"], docs[2]["run_id"] = "f" + docs[1]["run_id"][1:], "0" + docs[2]["run_id"][1:]
    for doc in docs:
        store.push(engine, doc)
    key = SeriesKey(docs[0]["job"]["fingerprint"], "decode_tokens_per_s", "910B3", "A100", 1)
    with session_scope(engine) as s:
        points = series_points(s.query(Run).all(), key, {})
    assert [(p.arrived, p.run()) for p in points] == [("candidate", docs[1]["run_id"]),
                                                       ("candidate", docs[2]["run_id"])]
    result = evaluate_series(points, DEFAULT_RULES["decode_tokens_per_s"])
    assert [v.run for v in result.verdicts] == [docs[1]["run_id"], docs[2]["run_id"]]


def _humaneval_doc(template: dict, at: dt.datetime, passed: list[bool]) -> dict:
    doc = _doc(template, at, 1.0, 1.0)
    doc["humaneval"] = {
        "problems": len(passed), "samples_per_problem": 1, "passed": sum(passed),
        "pass_at_k": {"1": sum(passed) / len(passed)},
        "results": [{"task_id": f"HumanEval/{i}", "sample": 0, "completion": "", "passed": ok,
                     "verdict": "passed" if ok else "failed: "} for i, ok in enumerate(passed)]}
    return rundoc.validate(doc)


def _pass_at_1_states(tmp_path, reference_docs, candidate_passes, baseline_passes, rule):
    engine = open_store(f"sqlite:///{tmp_path / f'{uuid.uuid4().hex}.db'}")
    for i, passed in enumerate(candidate_passes):
        day = T0 + dt.timedelta(days=i)
        store.push(engine, _humaneval_doc(reference_docs[1], day, baseline_passes))
        store.push(engine, _humaneval_doc(reference_docs[0], day + dt.timedelta(hours=1), passed))
    key = SeriesKey(reference_docs[0]["job"]["fingerprint"], "pass_at_1", "910B3", "A100")
    with session_scope(engine) as s:
        points = series_points(s.query(Run).all(), key, {})
    cand = [p for p in points if p.arrived == "candidate"]
    result = evaluate_series(points, rule)
    return cand, [v.state for v in result.verdicts if v.side == "candidate"]


def test_pass_at_1_drop_must_be_significant_on_per_problem_outcomes(tmp_path, reference_docs):
    from db.alerts.config import MetricRule

    base = [i < 54 for i in range(164)]  # 54 of 164, as the reference report
    lost = [i < 48 for i in range(164)]  # 6 problems lost: McNemar p = 0.016
    swapped = [(i < 42) or (54 <= i < 62) for i in range(164)]  # 12 lost, 8 gained: p = 0.25
    cand, states = _pass_at_1_states(tmp_path, reference_docs, [base] * 10 + [lost, lost], base,
                                     DEFAULT_RULES["pass_at_1"])
    assert cand[10].discordant == (0, 6) and states[10:] == ["suspected", "active"]
    unpaired = MetricRule(threshold=0.03)  # the ratio drop (7.4%) passes a 3% threshold ...
    cand, states = _pass_at_1_states(tmp_path, reference_docs, [base] * 10 + [swapped, swapped], base, unpaired)
    assert cand[10].discordant == (8, 12) and states[10:] == ["suspected", "active"]
    strict = MetricRule(threshold=0.03, paired_alpha=0.05)  # ... but 12 lost vs 8 gained is no evidence
    assert _pass_at_1_states(tmp_path, reference_docs, [base] * 10 + [swapped, swapped], base, strict)[1][10:] == \
        ["ok", "ok"]


def test_a_run_without_the_metric_makes_no_point(tmp_path, reference_docs):
    engine = open_store(f"sqlite:///{tmp_path / 's.db'}")
    for doc in (_doc(reference_docs[1], T0, 18.0, BASE), _doc(reference_docs[0], T0, 1.2, CAND)):
        doc["humaneval"] = None
        store.push(engine, doc)
    fp = reference_docs[0]["job"]["fingerprint"]
    with session_scope(engine) as s:
        runs = s.query(Run).all()
        assert series_points(runs, SeriesKey(fp, "decode_tokens_per_s", "910B3", "A100", 8), {}) == []  # no bs 8
        assert series_points(runs, SeriesKey(fp, "pass_at_1", "910B3", "A100"), {}) == []  # no HumanEval
        assert len(series_points(runs, SeriesKey(fp, "decode_tokens_per_s", "910B3", "A100", 1), {})) == 1


def test_annotation_restarts_the_baseline(tmp_path, reference_docs):
    url = f"sqlite:///{tmp_path / 's.db'}"
    _push_pairs(url, reference_docs, [1.0] * 8)
    ids = _push_pairs(url, reference_docs, [0.85, 0.85], start=8, seed=4)
    assert _check(url).exit_code == 1
    result = runner.invoke(app, ["alerts", "annotate", ids[0], "--note", "CANN 8.0 -> 8.1", "--db", url])
    assert result.exit_code == 0, result.output
    assert _check(url).exit_code == 0
    assert "active" not in [s for s, _ in _decode_alerts(url)]


def test_alerts_list_json_has_the_table_fields(tmp_path, reference_docs):
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert json.loads(runner.invoke(app, ["alerts", "list", "--format", "json", "--db", url]).stdout) == []
    _push_pairs(url, reference_docs, [1.0] * 8 + [0.85, 0.85])
    _check(url)
    result = runner.invoke(app, ["alerts", "list", "--format", "json", "--db", url])
    assert result.exit_code == 0, result.output
    (alert,) = [a for a in json.loads(result.stdout) if a["series"].endswith("/decode_tokens_per_s/910B3-vs-A100/bs1")]
    assert list(alert) == ["id", "state", "acknowledged", "series", "ratio", "change_pct", "moved", "updated_at",
                           "reason"]
    assert alert["state"] == "active" and alert["moved"] == "candidate fell" and alert["acknowledged"] is False
    assert alert["change_pct"] == pytest.approx(-15, abs=3) and dt.datetime.fromisoformat(alert["updated_at"])
    table = runner.invoke(app, ["alerts", "list", "--db", url]).output
    for header in ("id", "state", "ack", "series", "ratio", "change", "moved", "updated (UTC)", "why"):
        assert header in table


def test_push_evaluates_and_webhook_reaches_a_real_server(tmp_path, reference_docs, monkeypatch):
    from db.alerts.deliver import SIGNATURE_HEADER, verify

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
    job = reference_docs[0]["job"]
    assert payload["job"] == {"name": job["name"], "fingerprint": job["fingerprint"]}  # the job, not only its hash
    assert f"for {job['name']} (910B3 vs A100" in payload["text"]
    assert "run(s) after it averaging" in payload["reason"]


def _push_docs_only(reference_docs, factors, start):
    docs = []
    for i, f in enumerate(factors):
        day = T0 + dt.timedelta(days=start + i)
        docs.append(_doc(reference_docs[1], day, 18.123, BASE))
        docs.append(_doc(reference_docs[0], day + dt.timedelta(hours=1), 1.2386, CAND * f))
    return docs


@pytest.mark.parametrize("args, fragment", [
    (["alerts", "ack", "999"], "no alert with id 999"),
    (["alerts", "check", "--pairs", "910B3"], "expected CANDIDATE:BASELINE"),
    (["alerts", "annotate", "nope", "--note", "x"], "no run with id nope"),
    (["alerts", "list", "--format", "yaml"], "--format must be table or json"),
])
def test_alert_usage_errors(args, fragment):
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and fragment in result.output
