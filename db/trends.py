"""Trends for one device pair: per (fingerprint, metric, batch size), the candidate/baseline/ratio points over time.

Points come from db/pairing.py (the rule the comparison table and the alerts use): each run, once both devices
have one, adds a point pairing the latest run of each device at that moment, so every point is the comparison
table as it stood right after a run landed, and a ratio moves whichever side moved. A metric that the latest run of either side
lacks (an imported run without that figure, a batch size one side did not time) makes no point, as the table
would print "missing" there.

Example:
    with session_scope(open_store(url)) as s:
        for key, points in pair_trends(s, "910B3", "A100").items():
            print(key.fingerprint, key.metric, key.batch_size, points[-1].ratio)
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from itertools import groupby
from operator import itemgetter
from typing import Iterator, NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.errors import UserError
from core.metrics import HEADLINE, ratio
from db.models import AccuracyRecord, PerfRecord, Run, utc
from db.pairing import order_key, paired

METRICS = tuple(m.name for m in HEADLINE)  # higher-is-better: ratio = candidate / baseline reads the same way


class TrendKey(NamedTuple):
    fingerprint: str
    metric: str
    batch_size: int | None  # None for accuracy (pass_at_1)


@dataclass
class Series:
    """One series, stored column-wise (what a chart or a DataFrame takes, and 50,000 points stay cheap); iterating
    it yields TrendPoint(at, candidate_run, baseline_run, candidate, baseline, ratio), oldest first."""

    at: list[dt.datetime] = field(default_factory=list)  # finished_at (UTC) of the run whose arrival made the point
    candidate_run: list[str] = field(default_factory=list)
    baseline_run: list[str] = field(default_factory=list)
    candidate: list[float] = field(default_factory=list)
    baseline: list[float] = field(default_factory=list)
    ratio: list[float | None] = field(default_factory=list)  # core.metrics.ratio: None where the table prints n/a

    def __len__(self) -> int:
        return len(self.at)

    def __iter__(self) -> Iterator[TrendPoint]:
        """Point by point, oldest first: `for p in series: p.at, p.ratio`."""
        return map(TrendPoint._make, zip(self.at, self.candidate_run, self.baseline_run, self.candidate,
                                         self.baseline, self.ratio))

    def points(self) -> list[TrendPoint]:
        return list(self)


class TrendPoint(NamedTuple):
    at: dt.datetime
    candidate_run: str
    baseline_run: str
    candidate: float
    baseline: float
    ratio: float | None


def _read(session: Session, candidate: str, baseline: str, fingerprint: str | None, metrics: tuple[str, ...],
          batch_size: int | None) -> tuple[list, dict[str, dict[tuple[str, int | None], float]]]:
    """(the pair's runs ordered by fingerprint, run id -> {(metric, batch size or None): value})."""
    if candidate == baseline:
        raise UserError(f"candidate and baseline are both {candidate}: pick two different device classes")
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise ValueError(f"unknown trend metric(s) {sorted(unknown)} (known: {', '.join(METRICS)})")
    runs, perf, acc = Run.__table__, PerfRecord.__table__, AccuracyRecord.__table__
    where = [runs.c.device_class.in_((candidate, baseline))]
    if fingerprint is not None:
        where.append(runs.c.fingerprint == fingerprint)
    # Core rows (not ORM objects) from two narrow queries, no JSON column. Keys are shared tuples and points are
    # stored column-wise, so few objects outlive the call: the garbage collector's passes over a pair's history of
    # point tuples would cost as much as the queries.
    conn = session.connection()
    values: dict[str, dict[tuple[str, int | None], float]] = {}
    speed = [m.name for m in HEADLINE if m.source == "perf" and m.name in metrics]
    if speed:
        stmt = (select(perf.c.run_id, perf.c.batch_size, *(perf.c[m] for m in speed))
                .join_from(perf, runs, runs.c.id == perf.c.run_id).where(*where))
        if batch_size is not None:
            stmt = stmt.where(perf.c.batch_size == batch_size)
        keys: dict[int, list[tuple[str, int]]] = {}
        for run_id, bs, *row in conn.execute(stmt).all():
            got = values.setdefault(run_id, {})
            for k, v in zip(keys.get(bs) or keys.setdefault(bs, [(m, bs) for m in speed]), row):
                if v is not None:
                    got[k] = v
    accuracy = [m.name for m in HEADLINE if m.source == "humaneval" and m.name in metrics]
    ordered = conn.execute(
        select(runs.c.id, runs.c.fingerprint, runs.c.device_class, runs.c.finished_at, runs.c.pushed_at,
               runs.c.source, *(acc.c[m] for m in accuracy))
        .outerjoin_from(runs, acc, acc.c.run_id == runs.c.id).where(*where)
        .order_by(runs.c.fingerprint)).all()
    for row in ordered:
        got = values.setdefault(row.id, {})
        for m in accuracy:
            if row._mapping[m] is not None:
                got[(m, None)] = row._mapping[m]
    return ordered, values


def _series(ordered: list, values: dict, candidate: str, baseline: str) -> dict[TrendKey, Series]:
    out: dict[TrendKey, Series] = {}
    for fp, fp_runs in groupby(ordered, key=itemgetter(1)):
        series: dict[tuple[str, int | None], Series] = {}
        for arrived, cand, base in paired(fp_runs, candidate, baseline):
            at = utc(arrived.finished_at)
            c_id, b_id = cand.id, base.id
            c_vals, b_vals = values[c_id], values[b_id]
            for key, c in c_vals.items():
                b = b_vals.get(key)
                if b is None:
                    continue
                ser = series.get(key)
                if ser is None:
                    ser = series[key] = Series()
                ser.at.append(at)
                ser.candidate_run.append(c_id)
                ser.baseline_run.append(b_id)
                ser.candidate.append(c)
                ser.baseline.append(b)
                ser.ratio.append(ratio(c, b))
        for (metric, bs), ser in series.items():
            out[TrendKey(fp, metric, bs)] = ser
    return dict(sorted(out.items(), key=lambda kv: (kv[0].fingerprint, kv[0].metric, kv[0].batch_size or 0)))


def pair_trends(session: Session, candidate: str, baseline: str, fingerprint: str | None = None,
                metrics: tuple[str, ...] = METRICS, batch_size: int | None = None) -> dict[TrendKey, Series]:
    """Every series of the device pair (or of one fingerprint; speed at every batch size, or at `batch_size`),
    points oldest first, keys sorted."""
    return _series(*_read(session, candidate, baseline, fingerprint, metrics, batch_size), candidate, baseline)


def job_trend(session: Session, fingerprint: str, candidate: str, baseline: str, metric: str,
              batch_size: int | None) -> tuple[list[dict], Series]:
    """One chart's data from one read: every run of either device with its value (pairing order; runs without the
    metric left out) as {run_id, device, at, value, source}, and the ratio series (batch_size None for HumanEval)."""
    ordered, values = _read(session, candidate, baseline, fingerprint, (metric,), batch_size)
    key = (metric, batch_size)
    runs = [{"run_id": r.id, "device": r.device_class, "at": r.finished_at, "value": values[r.id][key],
             "source": r.source} for r in sorted(ordered, key=order_key) if key in values[r.id]]
    series = _series(ordered, values, candidate, baseline).get(TrendKey(fingerprint, metric, batch_size), Series())
    return runs, series
