"""The comparison of one job fingerprint on a device pair: the reference report's two tables (accuracy; speed per
batch size), the energy figures per batch size, the greedy token agreement and the per-layer precision as data, built
from the latest run of each device (db/pairing.py). db/tables.py renders it.

ratio = candidate / baseline (the headline metrics are higher-is-better; each energy metric's direction is in the
registry). A missing side is None ("missing" in text), never zero; a ratio over a zero or missing baseline is None
("n/a"). An energy figure a side lacks comes with the reason (no power meter, a phase too short to meter, a run
from before power sampling).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session, joinedload, selectinload

from core import precision
from core.errors import UserError
from core.metrics import ACCURACY_ROWS, ENERGY, SPEED, ratio
from db.models import JobDevice, PrecisionRecord, Run
from db.pairing import ORDER_BY


@dataclass
class Comparison:
    fingerprint: str
    job_name: str | None
    candidate: str
    baseline: str
    candidate_run: Run | None
    baseline_run: Run | None
    accuracy: list[dict] = field(default_factory=list)  # {metric, candidate, baseline, ratio}
    speed: list[dict] = field(default_factory=list)  # {batch_size, <metric>: {candidate, baseline, ratio}}
    # {batch_size, <metric>: {candidate, baseline, ratio, why: {side: reason}}, meters: {side: meter}}; empty when
    # neither run has energy records
    energy: list[dict] = field(default_factory=list)
    token_agreement: dict | None = None  # greedy ids of the fixed probe prompts, candidate vs baseline
    precision: dict | None = None  # per-layer precision (core.precision.compare), {"unavailable": why}, or None


def token_agreement(a: dict | None, b: dict | None) -> dict | None:
    """Share of identical greedy token ids over the probe prompts, and the first position where they diverge.

    Positions after a divergence still count in the share (a different prefix usually makes them differ, which is
    the point: the share says how much of the output two devices have in common).
    """
    if not a or not b or a["tasks"] != b["tasks"]:
        return None
    same = total = 0
    first = None  # (task, position)
    for task, x, y in zip(a["tasks"], a["tokens"], b["tokens"]):
        n = min(len(x), len(y))
        same += sum(1 for i in range(n) if x[i] == y[i])
        total += max(len(x), len(y))
        diverge = next((i for i in range(n) if x[i] != y[i]), None if len(x) == len(y) else n)
        if diverge is not None and first is None:
            first = {"task": task, "position": diverge}
    if total == 0:  # probes without tokens: nothing to compare
        return None
    return {"share": same / total, "tokens": total, "first_divergence": first}


def precision_between(session: Session, candidate: str | None, baseline: str | None,
                      threshold: float = precision.DEFAULT_THRESHOLD) -> dict | None:
    """The two runs' (ids) per-layer precision comparison; None when either has no precision section."""
    records = [session.get(PrecisionRecord, run_id) for run_id in (candidate, baseline) if run_id is not None]
    if len(records) < 2 or None in records:
        return None
    try:
        return precision.compare(records[0].data, records[1].data, threshold)
    except UserError as e:  # sections of other prompts or sketch settings: the tables still stand
        return {"unavailable": str(e)}


NO_ENERGY = "the run has no energy records (it predates power sampling, or was imported)"


def _energy_records(run: Run | None) -> dict[int, dict] | None:
    """batch size -> the run's energy record; None when the run has none at all."""
    records = ((run.extra or {}).get("energy") if run is not None else None) or None
    return None if records is None else {rec["batch_size"]: rec for rec in records}


def _energy_value(rec: dict | None, metric: str, side_records: dict | None, has_run: bool) -> tuple[object, str | None]:
    """(value, None), or (None, why there is no value): never a zero standing in for an absent meter."""
    if not has_run:
        return None, "no run of this job"
    if side_records is None:
        return None, NO_ENERGY
    if rec is None:
        return None, "no energy record at this batch size"
    if not rec["available"]:
        return None, rec["reason"]
    if rec.get(metric) is None:
        return None, "; ".join(f"{phase}: {why}" for phase, why in (rec.get("why") or {}).items()) or "not recorded"
    return rec[metric], None


def energy(cand: Run | None, base: Run | None) -> list[dict]:
    """Per batch size, each energy metric of both runs and their ratio, with the reason where a side has none."""
    sides = {"candidate": (cand, _energy_records(cand)), "baseline": (base, _energy_records(base))}
    if all(records is None for _, records in sides.values()):
        return []
    rows = []
    for bs in sorted({b for _, records in sides.values() for b in records or {}}):
        row = {"batch_size": bs, "meters": {}}
        for side, (run, records) in sides.items():
            rec = (records or {}).get(bs)
            if rec is not None and rec["available"]:
                row["meters"][side] = {"source": rec.get("source"), "interval_s": rec.get("interval_s"),
                                       "devices": rec.get("devices")}
        for metric in ENERGY:
            cell, why = {}, {}
            for side, (run, records) in sides.items():
                cell[side], reason = _energy_value((records or {}).get(bs), metric.name, records, run is not None)
                if reason is not None:
                    why[side] = reason
            row[metric.name] = {**cell, "ratio": ratio(cell["candidate"], cell["baseline"]), "why": why}
        rows.append(row)
    return rows


class NoSharedJob(UserError):
    """No fingerprint given, and no job has runs on both devices to pick one from."""


def latest_shared_fingerprint(session: Session, candidate: str, baseline: str) -> str | None:
    """The fingerprint with runs on both devices whose newest run is the most recent."""
    stmt = (select(JobDevice.fingerprint).where(JobDevice.device_class.in_([candidate, baseline]))
            .group_by(JobDevice.fingerprint).having(func.count() == 2)
            .order_by(func.max(JobDevice.latest_finished_at).desc()).limit(1))
    return session.scalars(stmt).first()


def _latest_runs(session: Session, fingerprint: str, devices: tuple[str, str]) -> dict[str, Run]:
    """device -> its latest run in pairing order, with perf and accuracy records: two statements for both devices
    (each a round trip on PostgreSQL)."""
    newest = [select(Run.id).where(Run.fingerprint == fingerprint, Run.device_class == device)
              .order_by(*(c.desc() for c in ORDER_BY)).limit(1).scalar_subquery() for device in devices]
    stmt = select(Run).where(Run.id.in_(newest)).options(selectinload(Run.perf), joinedload(Run.accuracy))
    return {run.device_class: run for run in session.scalars(stmt)}


def _check_devices_have_runs(session: Session, devices: tuple[str, str]) -> None:
    """In a store with runs, a device class with none at all is most likely a typo: name it and the devices the store
    has (an empty store is left to the caller's "no job has runs on both")."""
    known = set(session.scalars(select(JobDevice.device_class).distinct()))
    absent = [d for d in devices if d not in known]
    if known and absent:
        raise UserError(f"no run of device {' or '.join(absent)} in the store (devices with runs: "
                        f"{', '.join(sorted(known))})")


def build(session: Session, fingerprint: str | None, candidate: str, baseline: str,
          threshold: float | None = None) -> Comparison:
    """`threshold`: the relative error at which the precision section names a layer as the first over (None: the
    default)."""
    if candidate == baseline:
        raise UserError(f"candidate and baseline are both {candidate}: pick two different device classes")
    if fingerprint is None:
        fingerprint = latest_shared_fingerprint(session, candidate, baseline)
        if fingerprint is None:
            _check_devices_have_runs(session, (candidate, baseline))
            raise NoSharedJob(f"no job has runs on both {candidate} and {baseline}")
    latest = _latest_runs(session, fingerprint, (candidate, baseline))
    cand, base = latest.get(candidate), latest.get(baseline)
    if cand is None and base is None:
        raise UserError(f"no runs for fingerprint {fingerprint} on {candidate} or {baseline}")
    cmp = Comparison(fingerprint, (cand or base).job_name, candidate, baseline, cand, base)

    def acc(run: Run | None, attr: str):
        return getattr(run.accuracy, attr) if run is not None and run.accuracy is not None else None

    for metric in ACCURACY_ROWS:
        c, b = acc(cand, metric.name), acc(base, metric.name)
        cmp.accuracy.append({"metric": metric.label, "candidate": c, "baseline": b, "ratio": ratio(c, b)})
    cmp.token_agreement = token_agreement(cand.token_probe if cand else None, base.token_probe if base else None)
    cmp.precision = precision_between(session, cand and cand.id, base and base.id,
                                      precision.DEFAULT_THRESHOLD if threshold is None else threshold)
    cmp.energy = energy(cand, base)
    by_batch = {}
    for side, run in (("candidate", cand), ("baseline", base)):
        for rec in run.perf if run is not None else []:
            by_batch.setdefault(rec.batch_size, {})[side] = rec
    for bs in sorted(by_batch):
        row = {"batch_size": bs}
        for metric in SPEED:
            c, b = (getattr(by_batch[bs].get(s), metric.name, None) for s in ("candidate", "baseline"))
            row[metric.name] = {"candidate": c, "baseline": b, "ratio": ratio(c, b)}
        cmp.speed.append(row)
    return cmp
