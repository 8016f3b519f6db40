"""Reading stored alerts: the open ones, every one as plain data (dashboard, `runner alerts list`), and the markers
a trend chart draws."""
from __future__ import annotations

from sqlalchemy import inspect, select
from sqlalchemy.orm import Session

from core.metrics import METRICS
from db.alerts.evaluate import OPEN
from db.alerts.series import SeriesKey
from db.models import Alert, Run, utc

# What `runner alerts list` shows, as table columns and as JSON keys: (key, column header).
FIELDS = (("id", "id"), ("state", "state"), ("acknowledged", "ack"), ("series", "series"), ("ratio", "ratio"),
          ("change_pct", "change"), ("moved", "moved"), ("updated_at", "updated (UTC)"), ("reason", "why"))


def open_alerts(session: Session) -> list[Alert]:
    return list(session.scalars(select(Alert).where(Alert.state.in_(OPEN))
                                .order_by(Alert.updated_at.desc(), Alert.id.desc())))


def listed(session: Session, all_states: bool = False) -> list[dict]:
    """Open alerts (every alert with `all_states`), newest change first, as FIELDS; times are UTC."""
    rows = (session.scalars(select(Alert).order_by(Alert.updated_at.desc(), Alert.id.desc())) if all_states
            else open_alerts(session))
    return [{k: utc(a.updated_at) if k == "updated_at" else getattr(a, k) for k, _ in FIELDS} for a in rows]


def alerts(session: Session, series: str | None = None) -> list[dict]:
    """Stored alerts (of one series, or all) as dicts of their columns, most recently changed first, with `at`: when
    the episode began (the later of the two runs that opened it finished; `opened_at` is when detection noticed)."""
    stmt = select(Alert).order_by(Alert.updated_at.desc(), Alert.id.desc())
    if series is not None:
        stmt = stmt.where(Alert.series == series)
    rows = [{c.key: getattr(a, c.key) for c in inspect(a).mapper.column_attrs} for a in session.scalars(stmt)]
    ids = {r[k] for r in rows for k in ("opened_candidate_run", "opened_baseline_run")}
    finished = {i: t for i, t in session.execute(select(Run.id, Run.finished_at).where(Run.id.in_(ids)))}
    for r in rows:
        times = [finished.get(r["opened_candidate_run"]), finished.get(r["opened_baseline_run"])]
        r["at"] = max((t for t in times if t is not None), default=r["opened_at"])
    return rows


def alert_markers(session: Session, fingerprint: str, metric: str, candidate: str, baseline: str,
                  batch_size: int | None = None) -> list[dict]:
    """Alerts of one trend series, for markers on its chart: [{"at", "state", "label"}]. Detection judges the pairs
    it is configured for (910B3 vs A100); a chart of the reverse pair shows that series' alerts too, labelled so."""
    bs = None if METRICS[metric].source == "humaneval" else batch_size
    out = []
    for key, note in ((SeriesKey(fingerprint, metric, candidate, baseline, bs), ""),
                      (SeriesKey(fingerprint, metric, baseline, candidate, bs), f" ({baseline} vs {candidate})")):
        out += [{"at": a["at"], "state": a["state"] + (" (acknowledged)" if a["acknowledged"] else "") + note,
                 "label": (a["reason"] or a["state"]) + note}
                for a in alerts(session, str(key))]
    return out
