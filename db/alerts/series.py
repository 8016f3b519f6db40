"""Alert series from stored runs: which series a job has, the columns they read, and their points.

A series is one alerted metric of one job (fingerprint) on one device pair: a headline metric (core.metrics.HEADLINE),
per batch size for speed metrics, or an alerted serving metric (core.metrics.SERVING_ALERTS) per load level. Its
points come from db.pairing.paired, the rule the comparison table and the trends use: each run that lands once both
devices have one makes one point, holding that run (`Point.arrived`) and the other device's latest run. Detection
judges the arrived run only (db.alerts.detect); the other run is context. A run whose metric is missing on either
side (an imported run without that figure, a batch size or load level one side did not measure) makes no point.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.metrics import HEADLINE, METRICS, SERVING_ALERTS, SPEED
from core.rules import discordant, pass_fractions
from db.alerts.detect import Point
from db.models import AccuracyRecord, Annotation, PerfRecord, ProblemResult, Run, ServingRecord, utc
from db.pairing import paired

ACCURACY = tuple(m for m in HEADLINE if m.source == "humaneval")


def level_name(mode: str, level: float) -> str:
    """A serving load level as a series path segment: "c4" (concurrency 4), "r2.5" (2.5 requests/s)."""
    return f"{'c' if mode == 'concurrency' else 'r'}{level:g}"


def level_of(name: str) -> tuple[str, float]:
    """A level_name back as (mode, level): "c4" -> ("concurrency", 4.0), "r2.5" -> ("rate", 2.5)."""
    return ("concurrency" if name.startswith("c") else "rate"), float(name[1:])


@dataclass(frozen=True)
class SeriesKey:
    """What one series is about. `str()` is the path suppressions match: fingerprint/metric/pair[/bsN | /cN | /rX]."""

    fingerprint: str
    metric: str
    candidate_device: str
    baseline_device: str
    batch_size: int | None = None  # speed metrics; None for HumanEval metrics (their batch is in the fingerprint)
    level: str | None = None  # serving metrics: the load level (level_name)

    def __str__(self) -> str:
        path = f"{self.fingerprint}/{self.metric}/{self.candidate_device}-vs-{self.baseline_device}"
        return (path if self.batch_size is None else f"{path}/bs{self.batch_size}") + (
            "" if self.level is None else f"/{self.level}")


@dataclass
class RunData:
    """A run as the series read it (Core rows, not ORM objects): its pairing columns and the records of the alerted
    metrics. db.pairing and `value` read an ORM Run the same way."""

    id: str
    device_class: str
    finished_at: dt.datetime
    pushed_at: dt.datetime
    job_name: str
    perf: list[Any] = field(default_factory=list)
    accuracy: Any = None
    problems: list[Any] = field(default_factory=list)
    serving: list[Any] = field(default_factory=list)


RECORDS = (  # (table, RunData attribute, columns): what the series read of each record
    (PerfRecord, "perf", (PerfRecord.batch_size, *(getattr(PerfRecord, m.name) for m in SPEED))),
    (AccuracyRecord, "accuracy", tuple(getattr(AccuracyRecord, m.name) for m in ACCURACY)),
    (ProblemResult, "problems", (ProblemResult.task_id, ProblemResult.passed)),
    (ServingRecord, "serving", (ServingRecord.mode, ServingRecord.level,
                                *(getattr(ServingRecord, m.name) for m in SERVING_ALERTS))),
)


def load_runs(session: Session, where) -> list[RunData]:
    """The runs matching `where` (a condition on Run) with their records, one select per table."""
    runs = {r.id: RunData(r.id, r.device_class, r.finished_at, r.pushed_at, r.job_name) for r in session.execute(
        select(Run.id, Run.device_class, Run.finished_at, Run.pushed_at, Run.job_name).where(where))}
    if not runs:
        return []
    for table, attr, columns in RECORDS:
        if attr == "problems" and not ACCURACY:
            continue
        stmt = select(table.run_id, *columns).join(Run, Run.id == table.run_id).where(where)
        for row in session.execute(stmt):
            run = runs.get(row.run_id)
            if run is None:  # arrived between the two selects: it waits for the next evaluation
                continue
            if attr == "accuracy":
                run.accuracy = row
            else:
                getattr(run, attr).append(row)
    return list(runs.values())


def notes_at(session: Session, where) -> dict[str, str]:
    """run id -> the note annotated at it (the latest, when a run was annotated twice), for runs matching `where`."""
    stmt = (select(Annotation.run_id, Annotation.note).join(Run, Run.id == Annotation.run_id).where(where)
            .order_by(Annotation.created_at, Annotation.id))
    return {run_id: note for run_id, note in session.execute(stmt)}


def value(run, key: SeriesKey) -> float | None:
    """The run's figure for a series: its perf record at the batch size, its HumanEval record, or its serving record
    at the load level."""
    source = METRICS[key.metric].source
    if source == "humaneval":
        return getattr(run.accuracy, key.metric) if run.accuracy else None
    if source == "serving":
        rec = next((r for r in getattr(run, "serving", ()) if level_name(r.mode, r.level) == key.level), None)
    else:
        rec = next((r for r in run.perf if r.batch_size == key.batch_size), None)
    return getattr(rec, key.metric) if rec else None


def _fractions(run) -> dict[str, float] | None:
    return pass_fractions((p.task_id, p.passed) for p in run.problems) if run.problems else None


def series_points(runs: Iterable, key: SeriesKey, notes: Mapping[str, str],
                  new: Collection[str] | None = None) -> list[Point]:
    """Points of one series from the runs of its fingerprint (any order); `notes`: run id -> annotation. With `new`,
    only the points whose arrived run is one of these ids (the other runs give the pairing its latest runs)."""
    points = []
    paired_test = METRICS[key.metric].source == "humaneval"
    fractions: dict[str, dict[str, float] | None] = {}  # a run is the other side of many points: count it once
    for arrived, cand, base in paired(runs, key.candidate_device, key.baseline_device):
        if new is not None and arrived.id not in new:
            continue
        c, b = value(cand, key), value(base, key)
        if c is None or b is None:
            continue
        pair = None
        if paired_test:
            for r in (cand, base):
                if r.id not in fractions:
                    fractions[r.id] = _fractions(r)
            fc, fb = fractions[cand.id], fractions[base.id]
            pair = discordant(fc, fb) if fc is not None and fb is not None else None
        side = "candidate" if arrived.device_class == key.candidate_device else "baseline"
        points.append(Point(utc(arrived.finished_at), float(c), float(b), cand.id, base.id, side,
                            notes.get(arrived.id), pair))
    return points


def measured(runs: Iterable) -> dict[str, dict[str, list]]:
    """What each device measured, which decides the series: {device: {"sizes": [batch sizes], "levels": [...]}}."""
    out: dict[str, dict[str, set]] = {}
    for run in runs:
        seen = out.setdefault(run.device_class, {"sizes": set(), "levels": set()})
        seen["sizes"].update(r.batch_size for r in run.perf)
        seen["levels"].update(level_name(r.mode, r.level) for r in getattr(run, "serving", ()))
    return {d: {k: sorted(v) for k, v in m.items()} for d, m in out.items()}


def merged(a: Mapping[str, Mapping[str, list]], b: Mapping[str, Mapping[str, list]]) -> dict[str, dict[str, list]]:
    """Two `measured` answers as one."""
    return {d: {k: sorted({*a.get(d, {}).get(k, ()), *b.get(d, {}).get(k, ())}) for k in ("sizes", "levels")}
            for d in {*a, *b}}


def series_keys(fingerprint: str, pair: tuple[str, str], seen: Mapping[str, Mapping[str, list]]) -> list[SeriesKey]:
    """The series of one job on one pair, from what each device measured (`measured`): headline speed metrics at
    every batch size both devices timed, the headline HumanEval metrics, then the alerted serving metrics at every
    load level both devices served."""
    cand, base = pair

    def both(kind: str) -> set:
        return set(seen.get(cand, {}).get(kind, ())) & set(seen.get(base, {}).get(kind, ()))

    keys = [SeriesKey(fingerprint, m.name, cand, base, bs) for bs in sorted(both("sizes")) for m in SPEED]
    keys += [SeriesKey(fingerprint, m.name, cand, base) for m in ACCURACY]
    levels = sorted(both("levels"), key=level_of)  # c2 before c16, then the rates
    return keys + [SeriesKey(fingerprint, m.name, cand, base, level=lv) for lv in levels for m in SERVING_ALERTS]
