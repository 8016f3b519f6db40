"""The rule behind `runner alerts check`, the exit code CI reads: judge every series, deliver the state changes,
then fail on an active regression that nobody has acknowledged and no suppression covers.

Example:
    result = check(engine, configured(), pairs())
    sys.exit(1 if result.failing else 0)
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from db.alerts.config import AlertConfig, suppressed_by
from db.alerts.deliver import evaluate_and_deliver
from db.alerts.evaluate import Change
from db.alerts.listing import listed
from db.engine import session_scope


@dataclass(frozen=True)
class CheckResult:
    changes: list[Change]  # state changes this evaluation made (already delivered)
    active: list[dict]  # every active alert, as `runner alerts list` shows it
    failing: list[dict]  # the active ones that fail CI: neither acknowledged nor suppressed


def check(engine, cfg: AlertConfig, device_pairs: tuple[tuple[str, str], ...], rebuild: bool = False) -> CheckResult:
    """`rebuild`: judge every job from its first run, not from its checkpoint (db.alerts.checkpoint)."""
    changes = evaluate_and_deliver(engine, None, cfg, device_pairs, rebuild)
    now = dt.datetime.now(dt.timezone.utc)
    with session_scope(engine) as session:
        active = [a for a in listed(session) if a["state"] == "active"]
    failing = [a for a in active if not a["acknowledged"] and not suppressed_by(a["series"], now, cfg.suppressions)]
    return CheckResult(changes, active, failing)
