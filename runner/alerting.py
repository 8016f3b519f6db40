"""Evaluating and delivering regression alerts: after each push, and for `runner alerts check`.

Settings come from the environment so every host and the periodic checker agree:
- DEVCOMPARE_ALERTS_CONFIG: thresholds and suppressions file (TOML, see README "Regression alerts");
- DEVCOMPARE_ALERT_PAIRS: device pairs judged, "910B3:A100,910B4:A100" (default 910B3:A100);
- DEVCOMPARE_WEBHOOK_URL / DEVCOMPARE_WEBHOOK_SECRET: optional signed webhook on state changes;
- DEVCOMPARE_DASHBOARD_URL: link put in webhook messages.
"""
from __future__ import annotations

import datetime as dt
import os

from core.errors import UserError


def pairs(value: str | None = None) -> tuple[tuple[str, str], ...]:
    value = value if value is not None else os.environ.get("DEVCOMPARE_ALERT_PAIRS", "910B3:A100")
    out = []
    for item in filter(None, (v.strip() for v in value.split(","))):
        cand, sep, base = item.partition(":")
        if not sep or not cand or not base or cand == base:
            raise UserError(f"device pair {item!r}: expected CANDIDATE:BASELINE, e.g. 910B3:A100")
        out.append((cand, base))
    return tuple(out)


def config(path: str | None = None):
    from db.detect import load_config

    return load_config(path or os.environ.get("DEVCOMPARE_ALERTS_CONFIG"))


def deliver(changes, cfg, job_names: dict[str, str] | None = None) -> int:
    """Send the webhook for changes that matter and are not suppressed; returns how many were sent."""
    url = os.environ.get("DEVCOMPARE_WEBHOOK_URL")
    if not url:
        return 0
    from db.detect import suppressed_by
    from runner import webhook

    now, sent = dt.datetime.now(dt.timezone.utc), 0
    for ch in changes:
        if not webhook.should_send(ch.previous, ch.episode.state) or suppressed_by(ch.key, now, cfg.suppressions):
            continue
        payload = webhook.build_payload(ch.key, ch.episode, ch.previous,
                                        job_name=(job_names or {}).get(ch.key.fingerprint),
                                        dashboard_url=os.environ.get("DEVCOMPARE_DASHBOARD_URL"))
        sent += bool(webhook.send(url, payload, secret=os.environ.get("DEVCOMPARE_WEBHOOK_SECRET")))
    return sent


def evaluate_and_deliver(engine, fingerprints: list[str] | None = None, cfg=None, device_pairs=None):
    """Judge the affected series in one transaction, then deliver; returns the changes."""
    from db import alerts
    from db.engine import session_scope

    cfg = cfg or config()
    with session_scope(engine) as session:
        changes = alerts.evaluate(session, cfg, fingerprints, device_pairs or pairs())
    deliver(changes, cfg)
    return changes


def describe(change) -> str:
    ep = change.episode
    pct = f"{ep.latest.change_pct:+.1f}%" if ep.latest.change_pct is not None else "n/a"
    moved = next((v.moved for v in ep.verdicts if v.moved), None)
    return (f"alert {change.alert_id} {change.previous or 'new'} -> {ep.state}: {change.key} "
            f"ratio {ep.latest.ratio:.4g} ({pct}){', ' + moved if moved else ''}")
