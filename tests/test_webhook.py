"""Alert webhook (db/alerts/deliver.py) against a real HTTP server on 127.0.0.1: signature, retries, state changes."""
from __future__ import annotations

import datetime as dt
import http.server
import json
import logging
import socket
import threading

import pytest

from core.errors import UserError
from db.alerts.config import DEFAULT_RULES
from db.alerts.deliver import SIGNATURE_HEADER, build_payload, send, should_send, sign, verify
from db.alerts.detect import Point, evaluate_series
from db.alerts.series import SeriesKey

SECRET = "s3cret-hmac-key"
T0 = dt.datetime(2025, 3, 1, tzinfo=dt.timezone.utc)


class Receiver:
    """A local HTTP server that answers with the scripted status codes (then 200) and records every request."""

    def __init__(self, statuses=(), retry_after: str | None = None):
        self.statuses, self.retry_after = list(statuses), retry_after
        self.requests: list[tuple[dict, bytes]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append((dict(self.headers), body))
                status = outer.statuses.pop(0) if outer.statuses else 200
                self.send_response(status)
                if status == 429 and outer.retry_after:
                    self.send_header("Retry-After", outer.retry_after)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):  # keep pytest output clean
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.01,), daemon=True)  # quick shutdown

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T000/B000/tokenInPath"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def alert_and_key():
    """An active alert: a 10% fall of the candidate, from a real evaluation."""
    points = [Point(T0 + dt.timedelta(hours=i), 8.9 * (0.9 if i >= 20 else 1.0) * (1 + 0.004 * (-1) ** i), 16.5,
                    f"cand-{i}", f"base-{i}") for i in range(22)]
    (alert,) = evaluate_series(points, DEFAULT_RULES["decode_tokens_per_s"]).open_episodes
    assert alert.state == "active"
    return alert, SeriesKey("0123456789abcdef", "decode_tokens_per_s", "910B3", "A100", batch_size=1)


def test_payload_reaches_the_server_and_the_signature_verifies(alert_and_key):
    alert, key = alert_and_key
    payload = build_payload(key, alert, "suspected", job_name="codellama-34b",
                            dashboard_url="http://dash.local/Alerts?series=x")
    with Receiver() as rx:
        assert send(rx.url, payload, secret=SECRET, backoff_s=0.01)
    ((headers, body),) = rx.requests
    assert verify(body, headers[SIGNATURE_HEADER], SECRET)
    assert not verify(body, headers[SIGNATURE_HEADER], "other-secret")
    assert not verify(body.replace(b"active", b"resolved"), headers[SIGNATURE_HEADER], SECRET)
    assert not verify(body, None, SECRET)
    assert headers["Content-Type"] == "application/json"
    got = json.loads(body)
    assert got == payload
    assert got["metric"] == "decode_tokens_per_s" and got["state"] == "active"
    assert got["job"] == {"name": "codellama-34b", "fingerprint": "0123456789abcdef"}
    assert got["devices"] == {"candidate": "910B3", "baseline": "A100"}
    assert got["moved"] == "candidate fell"
    assert got["baseline_ratio"] == pytest.approx(8.9 / 16.5, rel=0.01)
    assert got["new_ratio"] == pytest.approx(0.9 * 8.9 / 16.5, rel=0.01)
    assert got["change_pct"] == pytest.approx(-10, abs=1)
    assert [r["candidate"] for r in got["runs"]] == ["cand-20", "cand-21"]
    assert got["dashboard_url"] == "http://dash.local/Alerts?series=x"
    # Slack incoming webhooks read "text"
    assert got["text"].startswith("[ACTIVE] decode_tokens_per_s ratio")
    assert "candidate fell" in got["text"] and "<http://dash.local/Alerts?series=x|Dashboard>" in got["text"]


def test_a_failing_server_is_retried_with_backoff(alert_and_key):
    alert, key = alert_and_key
    waits: list[float] = []
    with Receiver(statuses=[500, 503]) as rx:
        assert send(rx.url, build_payload(key, alert, None), SECRET, retries=3, backoff_s=0.01, sleep=waits.append)
    assert len(rx.requests) == 3
    assert waits == [0.01, 0.02]  # exponential
    bodies = {body for _, body in rx.requests}
    assert len(bodies) == 1  # the same signed body each time


def test_gives_up_after_the_retries(alert_and_key):
    alert, key = alert_and_key
    with Receiver(statuses=[500] * 10) as rx:
        assert not send(rx.url, build_payload(key, alert, None), SECRET, retries=2, backoff_s=0.001)
    assert len(rx.requests) == 3


def test_client_errors_are_not_retried_but_429_is(alert_and_key):
    alert, key = alert_and_key
    with Receiver(statuses=[400]) as rx:
        assert not send(rx.url, build_payload(key, alert, None), SECRET, backoff_s=0.001)
    assert len(rx.requests) == 1
    waits: list[float] = []
    with Receiver(statuses=[429], retry_after="2") as rx:
        assert send(rx.url, build_payload(key, alert, None), SECRET, backoff_s=0.001, sleep=waits.append)
    assert len(rx.requests) == 2 and waits == [2.0]  # the server's Retry-After wins over a shorter backoff


def test_unreachable_server_returns_false_and_never_logs_secret_or_url_path(alert_and_key, caplog):
    alert, key = alert_and_key
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/hooks/T000/B000/tokenInPath?key=querySecret"
    with caplog.at_level(logging.DEBUG, logger="db.alerts.deliver"):
        assert not send(url, build_payload(key, alert, None), SECRET, retries=1, backoff_s=0.001, timeout_s=2)
    logged = caplog.text
    assert f"127.0.0.1:{port}" in logged and "attempt 2 of 2" in logged
    for secret in (SECRET, "tokenInPath", "querySecret"):
        assert secret not in logged


def test_without_a_secret_there_is_no_signature_header(alert_and_key):
    alert, key = alert_and_key
    with Receiver() as rx:
        assert send(rx.url, build_payload(key, alert, None), secret=None)
    ((headers, _),) = rx.requests
    assert SIGNATURE_HEADER not in headers


def test_only_http_urls_are_accepted():
    with pytest.raises(UserError, match="http:// or https://"):
        send("file:///etc/passwd", {"text": "x"})


def test_signature_is_hmac_sha256_of_the_body():
    # RFC 4231 test case 2
    assert sign(b"what do ya want for nothing?", "Jefe") == (
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")


@pytest.mark.parametrize("previous, new, expected", [
    (None, "suspected", False),  # suspected and outlier stay on the dashboard
    ("suspected", "outlier", False),
    ("suspected", "active", True),
    (None, "active", True),  # first seen already confirmed
    ("active", "active", False),  # no change, no message
    ("active", "resolved", True),  # whoever heard "active" hears the end
    ("suspected", "resolved", False),  # annotated before it was ever announced
])
def test_should_send_only_on_changes_into_or_out_of_active(previous, new, expected):
    assert should_send(previous, new) is expected


def test_an_unchanged_state_sends_nothing(alert_and_key):
    """The delivery loop the store runs after each push: the second evaluation finds the state unchanged."""
    alert, key = alert_and_key
    stored: str | None = None
    with Receiver() as rx:
        for _ in range(2):
            if should_send(stored, alert.state):
                assert send(rx.url, build_payload(key, alert, stored), SECRET, backoff_s=0.001)
            stored = alert.state
    assert len(rx.requests) == 1
    with Receiver() as rx:
        for state in ("suspected", "suspected", "outlier"):
            if should_send(stored, state, notify={"suspected", "active"}):
                send(rx.url, {"text": state}, SECRET, backoff_s=0.001)
            stored = state
    assert [json.loads(b)["text"] for _, b in rx.requests] == ["suspected", "outlier"]


def test_an_alert_closed_by_an_annotation_still_makes_a_payload():
    """Annotating the run that moved resolves the alert; its message reports the last bad run and the annotation."""
    points = [Point(T0 + dt.timedelta(hours=i), 8.9 * (0.9 if i >= 20 else 1.0) * (1 + 0.004 * (-1) ** i), 16.5,
                    f"cand-{i}", f"base-{i}", annotation="CANN 8.1" if i == 23 else None) for i in range(24)]
    (episode,) = evaluate_series(points, DEFAULT_RULES["decode_tokens_per_s"]).episodes
    assert episode.state == "resolved" and episode.closed_by.run == "cand-23"
    key = SeriesKey("0123456789abcdef", "decode_tokens_per_s", "910B3", "A100", batch_size=1)
    payload = build_payload(key, episode, "active", job_name="codellama-34b")
    assert payload["state"] == "resolved" and payload["change_pct"] == pytest.approx(-10, abs=1)
    assert "annotated at candidate run cand-23: CANN 8.1" in payload["reason"] and "[RESOLVED]" in payload["text"]
