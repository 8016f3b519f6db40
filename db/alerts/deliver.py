"""Delivering alert state changes: a signed JSON POST (webhook) when an alert enters or leaves a notified state, with
the standard library only.

The body is the JSON payload from `build_payload`; `X-Devcompare-Signature: sha256=<hex>` is the HMAC-SHA256 of
the raw body under the shared secret, checked by receivers with `verify`. The payload has a Slack-compatible "text"
field, so a Slack incoming-webhook URL works as is. Failures (connection errors, timeouts, 408/429/5xx) are retried
with exponential backoff; other 4xx are not, since the same request would fail again. Neither the secret nor the
URL's path and query (Slack keeps its token there) is ever logged.

Settings come from the environment, so every host and the periodic checker agree:
DEVCOMPARE_WEBHOOK_URL and DEVCOMPARE_WEBHOOK_SECRET (no URL: nothing is sent), DEVCOMPARE_DASHBOARD_URL (a link
put in messages).

Example:
    changes = evaluate_and_deliver(engine, [fingerprint])   # after a push: judge, store, send
    for change in changes: print(describe(change))
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import math
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Collection, Iterable

from core.errors import UserError
from db.alerts.config import AlertConfig, configured, pairs, suppressed_by
from db.alerts.detect import Episode
from db.alerts.evaluate import Change, evaluate
from db.alerts.series import SeriesKey, level_of
from db.engine import session_scope
from db.serving import level_label

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Devcompare-Signature"
# A message on entering or leaving these states. Suspected and outlier stay on the dashboard: at 3-5% noise about
# one run in twenty is suspected and goes back, which would make the channel noise.
NOTIFY_STATES: frozenset[str] = frozenset({"active"})
MAX_RETRY_AFTER_S = 60.0  # a server's Retry-After is honoured up to this


def should_send(previous: str | None, new: str, notify: Collection[str] = NOTIFY_STATES) -> bool:
    """True when the state changed into or out of a notified state (so whoever heard "active" hears "resolved")."""
    return new != previous and (new in notify or previous in notify)


def sign(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(body: bytes, header: str | None, secret: str) -> bool:
    """Check a received body against its signature header, in constant time."""
    return bool(header) and hmac.compare_digest(sign(body, secret), header)


def _redacted(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None  # JSON has no inf/NaN


def build_payload(key: SeriesKey, alert: Episode, previous_state: str | None, *, job_name: str | None = None,
                  dashboard_url: str | None = None) -> dict:
    """The JSON body for one alert state change. Ratios are candidate/baseline with the other device at its usual
    level; `baseline_ratio` is the usual ratio and `change_pct` is against it; `reason` is what the rule used."""
    # a resolved alert reports the run that brought the ratio back; one closed by an annotation, its last bad run
    shown = alert.closed_by if alert.closed_by and alert.closed_by.change_pct is not None else alert.latest
    runs = [{"candidate": v.candidate_run, "baseline": v.baseline_run, "arrived": v.side, "at": v.point.at.isoformat()}
            for v in (*alert.verdicts, *([alert.closed_by] if alert.closed_by else []))]
    job = job_name or key.fingerprint
    where = f"{key.candidate_device} vs {key.baseline_device}" + (
        f", batch {key.batch_size}" if key.batch_size is not None else "") + (
        f", {level_label(*level_of(key.level))}" if key.level is not None else "")
    text = (f"[{alert.state.upper()}] {key.metric} ratio {shown.ratio:.4g} vs usual {shown.usual_ratio:.4g} "
            f"({shown.change_pct:+.1f}%) for {job} ({where})")
    if alert.state in ("suspected", "active") and alert.moved:
        text += f": {alert.moved}"
    text += f". {alert.explanation}. Runs {shown.candidate_run} / {shown.baseline_run}."
    if dashboard_url:
        text += f" <{dashboard_url}|Dashboard>"  # Slack mrkdwn link
    return {
        "event": "devcompare.alert",
        "state": alert.state,
        "previous_state": previous_state,
        "series": str(key),
        "metric": key.metric,
        "job": {"name": job_name, "fingerprint": key.fingerprint},
        "devices": {"candidate": key.candidate_device, "baseline": key.baseline_device},
        "batch_size": key.batch_size,
        "level": key.level,  # serving metrics: "c4" (concurrency 4), "r2.5" (2.5 requests/s)
        "baseline_ratio": _finite(shown.usual_ratio),
        "new_ratio": _finite(shown.ratio),
        "change_pct": _finite(shown.change_pct),
        "moved": alert.moved,
        "reason": alert.explanation,
        "opened_at": alert.opened.point.at.isoformat(),
        "runs": runs,
        "dashboard_url": dashboard_url,
        "text": text,
    }


def send(url: str, payload: dict, secret: str | None = None, retries: int = 3, backoff_s: float = 0.5,
         timeout_s: float = 5.0, *, sleep: Callable[[float], None] = time.sleep) -> bool:
    """POST `payload` as JSON; True once a 2xx arrives, False when every attempt (1 + `retries`) failed."""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise UserError(f"webhook URL must start with http:// or https://, got {_redacted(url)}")
    body = json.dumps(payload, sort_keys=True, allow_nan=False).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "devcompare-alerts/1"}
    if secret:
        headers[SIGNATURE_HEADER] = sign(body, secret)
    where = _redacted(url)
    for attempt in range(1, retries + 2):
        wait = backoff_s * 2 ** (attempt - 1)
        try:
            with urllib.request.urlopen(urllib.request.Request(url, body, headers, method="POST"),
                                        timeout=timeout_s) as response:
                response.read()
            log.info("webhook to %s delivered (attempt %d)", where, attempt)
            return True
        except urllib.error.HTTPError as e:
            retryable = e.code in (408, 429) or e.code >= 500
            log.warning("webhook to %s: HTTP %d (attempt %d of %d)%s", where, e.code, attempt, retries + 1,
                        "" if retryable else ", not retried")
            if not retryable:
                return False
            retry_after = e.headers.get("Retry-After", "") if e.headers else ""
            if retry_after.isdigit():
                wait = max(wait, min(float(retry_after), MAX_RETRY_AFTER_S))
        except (urllib.error.URLError, OSError) as e:  # refused, unreachable, timed out
            reason = getattr(e, "reason", e)
            log.warning("webhook to %s failed (attempt %d of %d): %s", where, attempt, retries + 1,
                        str(reason).replace(url, where))
        if attempt <= retries:
            sleep(wait)
    return False


def deliver(changes: Iterable[Change], cfg: AlertConfig) -> int:
    """Send the webhook for changes that matter and are not suppressed; returns how many were sent."""
    url = os.environ.get("DEVCOMPARE_WEBHOOK_URL")
    if not url:
        return 0
    now, sent = dt.datetime.now(dt.timezone.utc), 0
    for ch in changes:
        if not should_send(ch.previous, ch.episode.state) or suppressed_by(ch.key, now, cfg.suppressions):
            continue
        payload = build_payload(ch.key, ch.episode, ch.previous, job_name=ch.job_name,
                                dashboard_url=os.environ.get("DEVCOMPARE_DASHBOARD_URL"))
        sent += bool(send(url, payload, secret=os.environ.get("DEVCOMPARE_WEBHOOK_SECRET")))
    return sent


def evaluate_and_deliver(engine, fingerprints: list[str] | None = None, cfg: AlertConfig | None = None,
                         device_pairs: tuple[tuple[str, str], ...] | None = None,
                         rebuild: bool = False) -> list[Change]:
    """Judge the affected series in one transaction (`rebuild`: from their first run), then deliver; returns the
    changes."""
    cfg = cfg or configured()
    with session_scope(engine) as session:
        changes = evaluate(session, cfg, fingerprints, device_pairs or pairs(), rebuild)
    deliver(changes, cfg)
    return changes


def describe(change: Change) -> str:
    """One line per state change, as `runner push` and the agent print it."""
    ep = change.episode
    pct = f"{ep.latest.change_pct:+.1f}%" if ep.latest.change_pct is not None else "n/a"
    return (f"alert {change.alert_id} {change.previous or 'new'} -> {ep.state}: {change.job_name} {change.key} "
            f"ratio {ep.latest.ratio:.4g} ({pct}){', ' + ep.moved if ep.moved else ''}")
