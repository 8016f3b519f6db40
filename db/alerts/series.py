"""Alert series from stored runs: which series a job has, and their points.

A series is one headline metric (core.metrics.HEADLINE) of one job (fingerprint) on one device pair, per batch size
for speed metrics. Its points come from db.pairing.paired, the rule the comparison table and the trends use: each
run that lands once both devices have one makes one point, holding that run (`Point.arrived`) and the other
device's latest run. Detection judges the arrived run only (db.alerts.detect); the other run is context. A run
whose metric is missing on either side (an imported run without that figure, a batch size one side did not time)
makes no point.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from core.metrics import HEADLINE, METRICS, SPEED
from core.rules import discordant, pass_fractions
from db.alerts.detect import Point
from db.models import Run, utc
from db.pairing import paired


@dataclass(frozen=True)
class SeriesKey:
    """What one series is about. `str()` is the path suppressions match: fingerprint/metric/pair[/bsN]."""

    fingerprint: str
    metric: str
    candidate_device: str
    baseline_device: str
    batch_size: int | None = None  # speed metrics; None for HumanEval metrics (their batch is in the fingerprint)

    def __str__(self) -> str:
        path = f"{self.fingerprint}/{self.metric}/{self.candidate_device}-vs-{self.baseline_device}"
        return path if self.batch_size is None else f"{path}/bs{self.batch_size}"


def value(run: Run, metric: str, batch_size: int | None) -> float | None:
    """The run's figure for a series: its perf record at `batch_size`, or its HumanEval record."""
    if METRICS[metric].source == "humaneval":
        return getattr(run.accuracy, metric) if run.accuracy else None
    rec = next((r for r in run.perf if r.batch_size == batch_size), None)
    return getattr(rec, metric) if rec else None


def _fractions(run: Run) -> dict[str, float] | None:
    return pass_fractions((p.task_id, p.passed) for p in run.problems) if run.problems else None


def series_points(runs: Iterable[Run], key: SeriesKey, notes: Mapping[str, str]) -> list[Point]:
    """Points of one series from the runs of its fingerprint (any order); `notes`: run id -> annotation."""
    points = []
    paired_test = METRICS[key.metric].source == "humaneval"
    for arrived, cand, base in paired(runs, key.candidate_device, key.baseline_device):
        c, b = value(cand, key.metric, key.batch_size), value(base, key.metric, key.batch_size)
        if c is None or b is None:
            continue
        pair = None
        if paired_test:
            fc, fb = _fractions(cand), _fractions(base)
            pair = discordant(fc, fb) if fc is not None and fb is not None else None
        side = "candidate" if arrived.device_class == key.candidate_device else "baseline"
        points.append(Point(utc(arrived.finished_at), float(c), float(b), cand.id, base.id, side,
                            notes.get(arrived.id), pair))
    return points


def series_keys(runs: list[Run], fingerprint: str, pair: tuple[str, str]) -> list[SeriesKey]:
    """The series of one job on one pair: headline speed metrics at every batch size both devices timed, then the
    headline HumanEval metrics."""
    cand, base = pair
    sizes = {d: {r.batch_size for run in runs if run.device_class == d for r in run.perf} for d in pair}
    keys = [SeriesKey(fingerprint, m.name, cand, base, bs) for bs in sorted(sizes[cand] & sizes[base]) for m in SPEED]
    return keys + [SeriesKey(fingerprint, m.name, cand, base) for m in HEADLINE if m.source == "humaneval"]
