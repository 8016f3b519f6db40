"""The Overview: every job on every device pair it has runs on, at a glance.

One row per (job fingerprint, device pair with runs on both sides): the latest ratio of each headline metric
(core.metrics.HEADLINE; speed at batch size 1, or the smallest one both latest runs timed) with its change since the
previous point, the last points of its ratio series (a sparkline), the open alert of the pair if any, how old each
device's newest run is, and whether the two latest runs are comparable at all.

The points come from db.pairing (the rule of the comparison table, the trends and the alerts) applied to each
device's last RECENT runs only: job_devices.recent_since says where they begin, so the query reads an index range per
job and device and its cost does not grow with history. Those runs hold the pair's last SPARK points exactly: for
each device, its runs among the points and the run before them.

Example:
    with session_scope(open_store(url)) as s:
        for row in overview(s):
            print(row["job_name"], row["candidate"], row["baseline"], row["metrics"]["decode_tokens_per_s"]["ratio"])
"""
from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass, field

from sqlalchemy import select, union_all
from sqlalchemy.orm import Session

from core.metrics import HEADLINE, SPEED, ratio
from core.rules import DEFAULT_PAIR
from db.models import RECENT, AccuracyRecord, Alert, JobDevice, PerfRecord, Run, utc
from db.pairing import paired

SPARK = RECENT - 1  # ratio points per sparkline
ACCURACY = tuple(m for m in HEADLINE if m.source == "humaneval")
OPEN_STATES = ("suspected", "active")  # alert states still open (db.models.Alert.state)
RANGES_PER_STATEMENT = 400  # SQLite takes at most 500 SELECTs in one compound statement


@dataclass
class _Run:
    """What the Overview needs of one run: pairing order, origin, and its headline values."""

    id: str
    device_class: str
    finished_at: dt.datetime
    pushed_at: dt.datetime
    source: str
    problems: int | None = None
    values: dict[tuple[str, int | None], float] = field(default_factory=dict)  # (metric, batch size or None)
    timed: dict[int, bool] = field(default_factory=dict)  # batch sizes timed -> CPU contention meanwhile


def _recent_runs(session: Session, devices: list[JobDevice]) -> dict[str, list[_Run]]:
    """fingerprint -> the recent runs of each of its devices, with their perf and accuracy values.

    One index range per job and device, all in one statement (UNION ALL): a join with job_devices would leave the
    order to the planner, and one without statistics (SQLite) walks every run; a statement per range costs a round
    trip each (PostgreSQL)."""
    runs, perf, acc = (m.__table__ for m in (Run, PerfRecord, AccuracyRecord))
    columns = (runs.c.fingerprint, runs.c.id, runs.c.device_class, runs.c.finished_at, runs.c.pushed_at,
               runs.c.source, acc.c.problems, *(acc.c[m.name] for m in ACCURACY), perf.c.batch_size,
               perf.c.cpu_contention, *(perf.c[m.name] for m in SPEED))
    joined = runs.outerjoin(acc, acc.c.run_id == runs.c.id).outerjoin(perf, perf.c.run_id == runs.c.id)
    accuracy_keys = [(m.name, None) for m in ACCURACY]
    out: dict[str, dict[str, _Run]] = {}
    for start in range(0, len(devices), RANGES_PER_STATEMENT):
        stmt = union_all(*(select(*columns).select_from(joined).where(
            runs.c.fingerprint == jd.fingerprint, runs.c.device_class == jd.device_class,
            runs.c.finished_at >= jd.recent_since) for jd in devices[start:start + RANGES_PER_STATEMENT]))
        for row in session.execute(stmt):
            fp, run_id, rest = row[0], row[1], row[7:]  # by position: a row per run and batch size, thousands
            run = out.setdefault(fp, {}).get(run_id)
            if run is None:
                run = out[fp][run_id] = _Run(*row[1:7])
                run.values.update((k, v) for k, v in zip(accuracy_keys, rest) if v is not None)
            batch_size, contention, *speed = rest[len(ACCURACY):]
            if batch_size is not None:
                run.timed[batch_size] = bool(contention)
                run.values.update(((m.name, batch_size), v) for m, v in zip(SPEED, speed) if v is not None)
    return {fp: list(by_id.values()) for fp, by_id in out.items()}


def _orient(a: str, b: str, pairs: tuple[tuple[str, str], ...]) -> tuple[str, str]:
    """(candidate, baseline): as a configured pair has it, else in name order."""
    return next((p for p in pairs if set(p) == {a, b}), tuple(sorted((a, b))))


def _metric(events: list, key: tuple[str, int | None]) -> dict:
    """The latest ratio of one series, the previous point's, the change between them in %, and the points."""
    points = [ratio(c.values[key], b.values[key]) for _, c, b in events if key in c.values and key in b.values]
    _, cand, base = events[-1]
    now_ratio = points[-1] if key in cand.values and key in base.values else None
    previous = points[-2] if now_ratio is not None and len(points) > 1 else None
    change = (now_ratio / previous - 1) * 100 if now_ratio is not None and previous else None
    return {"ratio": now_ratio, "previous": previous, "change_pct": change, "points": points}


def _not_comparable(cand: _Run, base: _Run, names: tuple[str, str], batch_size: int | None) -> list[str]:
    """Why the two latest runs do not make a fair comparison (empty when they do)."""
    why = [f"the {n} run is imported (published aggregates)" for run, n in zip((cand, base), names)
           if run.source == "imported"]
    if batch_size is None:
        why.append("no batch size timed on both devices")
    else:
        why += [f"CPU contention while timing on {n}" for run, n in zip((cand, base), names)
                if run.timed.get(batch_size)]
    if cand.problems is not None and base.problems is not None and cand.problems != base.problems:
        why.append(f"HumanEval problem counts differ ({cand.problems} vs {base.problems})")
    return why


def _open_alerts(session: Session) -> dict[tuple[str, frozenset], dict]:
    """(fingerprint, {device, device}) -> the pair's most serious open alert (the newest active one, else the newest
    suspected one) and how many are open."""
    found: dict[tuple[str, frozenset], list[Alert]] = {}
    stmt = select(Alert).where(Alert.state.in_(OPEN_STATES)).order_by(Alert.updated_at.desc(), Alert.id.desc())
    for a in session.scalars(stmt):
        found.setdefault((a.fingerprint, frozenset((a.candidate_device, a.baseline_device))), []).append(a)
    out = {}
    for key, alerts in found.items():
        a = next((a for a in alerts if a.state == "active"), alerts[0])
        out[key] = {"id": a.id, "state": a.state, "metric": a.metric, "batch_size": a.batch_size, "series": a.series,
                    "acknowledged": a.acknowledged, "reason": a.reason, "open": len(alerts)}
    return out


def overview(session: Session, pairs: tuple[tuple[str, str], ...] = (DEFAULT_PAIR,),
             now: dt.datetime | None = None) -> list[dict]:
    """One dict per job and device pair, the job with the newest run first. `pairs` orient a pair as candidate and
    baseline (others go in name order); `now` is what ages are measured from (default: the current time)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    jobs: dict[str, dict[str, JobDevice]] = {}
    summary = list(session.scalars(select(JobDevice)))
    for jd in summary:
        jobs.setdefault(jd.fingerprint, {})[jd.device_class] = jd
    runs = _recent_runs(session, [jd for jd in summary if len(jobs[jd.fingerprint]) > 1])
    alerts = _open_alerts(session)
    rows = []
    for fp, devices in jobs.items():
        named = max(devices.values(), key=lambda d: utc(d.latest_finished_at))  # display name of the newest run
        for a, b in itertools.combinations(sorted(devices), 2):
            cand_dev, base_dev = _orient(a, b, pairs)
            events = list(paired(runs.get(fp, []), cand_dev, base_dev))[-SPARK:]
            if not events:  # job_devices out of step with the runs: `runner db rebuild-summary` repairs it
                continue
            _, cand, base = events[-1]
            shared = set(cand.timed) & set(base.timed)
            bs = 1 if 1 in shared else min(shared, default=None)
            metrics = {m.name: _metric(events, (m.name, None if m.source == "humaneval" else bs)) for m in HEADLINE}
            why = _not_comparable(cand, base, (cand_dev, base_dev), bs)
            newest = {d: utc(devices[d].latest_finished_at) for d in (cand_dev, base_dev)}
            rows.append({"fingerprint": fp, "job_name": named.job_name, "model_name": named.model_name,
                         "candidate": cand_dev, "baseline": base_dev, "batch_size": bs, "metrics": metrics,
                         "candidate_run": cand.id, "baseline_run": base.id,
                         "alert": alerts.get((fp, frozenset((cand_dev, base_dev)))),
                         "newest": newest, "age": {d: now - t for d, t in newest.items()},
                         "comparable": not why, "not_comparable": why})
    return sorted(rows, key=lambda r: (-max(r["newest"].values()).timestamp(), r["job_name"], r["candidate"],
                                       r["baseline"]))
