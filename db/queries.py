"""Read queries for the dashboard: jobs, the comparison view with its statistics, trend series, per-problem diffs,
run list and detail (alerts are read by db.alerts.listing).

Every function takes a Session and returns plain data (dicts, lists, numbers, strings, datetimes, frozen
dataclasses), so callers can cache and pickle the result; nothing here writes. The comparison tables themselves
come from db/compare.py, the statistics from db/stats.py.

Example:
    with session_scope(open_store(url)) as s:
        view = comparison(s, "503d79e90157b72b", "910B3", "A100")
        view["accuracy_table"], view["accuracy_test"], view["speed_intervals"]
"""
from __future__ import annotations

import re

from sqlalchemy import func, inspect, select
from sqlalchemy.orm import Session

from core.metrics import METRICS, SPEED, titled
from core.rules import pass_fractions
from db import compare, pairing, stats, tables, trends
from db.models import AccuracyRecord, JobDevice, PerfRecord, ProblemResult, Run

# Environment fields whose change can move a ratio: always shown, "not recorded"
# where a run lacks them. Then context, shown where either run recorded it.
VERSION_KEYS = (("torch", "torch"), ("torch_npu", "torch_npu"), ("cann", "CANN"), ("driver", "driver"),
                ("cuda", "CUDA"), ("transformers", "transformers"))
ENVIRONMENT_KEYS = VERSION_KEYS + (("python", "python"),
                    ("project_commit", "project commit"), ("settings", "speed-relevant settings"),
                    ("torch_threads", "torch threads"), ("host", "host"), ("cpu_model", "CPU"), ("os", "OS"))


def _task_key(task_id: str):
    """HumanEval/9 before HumanEval/10."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", task_id)]


def jobs(session: Session) -> list[dict]:
    """One entry per fingerprint, most recently run first: name, model, runs per device class (from job_devices,
    a row per job and device, not from every run)."""
    stmt = select(JobDevice.fingerprint, JobDevice.job_name, JobDevice.model_name, JobDevice.device_class,
                  JobDevice.runs, JobDevice.latest_finished_at)
    out: dict[str, dict] = {}
    for fp, name, model, device, n, last in session.execute(stmt):
        job = out.setdefault(fp, {"fingerprint": fp, "job_name": name, "model_name": model, "devices": {},
                                  "runs": 0, "last": last})
        job["devices"][device] = n
        job["runs"] += n
        if last >= job["last"]:  # the display name of the newest run (it is not part of the fingerprint)
            job.update(job_name=name, model_name=model, last=last)
    return sorted(out.values(), key=lambda j: j["last"], reverse=True)


def _run_summary(run: Run | None) -> dict | None:
    if run is None:
        return None
    return {"id": run.id, "device_class": run.device_class, "device_name": run.device_name,
            "device_count": run.device_count, "source": run.source, "imported_from": run.imported_from,
            "missing": list(run.missing or []), "finished_at": run.finished_at, "job_name": run.job_name}


def problem_outcomes(session: Session, run_id: str) -> dict[str, float]:
    """task_id -> fraction of the run's samples that passed; empty when the run stored no per-problem results."""
    return pass_fractions(session.execute(select(ProblemResult.task_id, ProblemResult.passed)
                                          .where(ProblemResult.run_id == run_id)))


def _no_results_reason(run: dict, device: str) -> str:
    origin = (f"imported from {run['imported_from']}" if run.get("imported_from") else run["source"])
    return (f"the {device} run {run['id'][:8]} ({origin}) has no per-problem results; the paired test needs "
            "each problem's outcome on both devices")


def accuracy_test(session: Session, candidate_run: dict | None, baseline_run: dict | None,
                  candidate: str, baseline: str) -> tuple[stats.AccuracyTest | None, str | None]:
    """(the paired test, None) or (None, why it is not available). Never a made-up p-value."""
    for run, device in ((candidate_run, candidate), (baseline_run, baseline)):
        if run is None:
            return None, f"there is no {device} run"
    outcomes = []
    for run, device in ((candidate_run, candidate), (baseline_run, baseline)):
        o = problem_outcomes(session, run["id"])
        if not o:
            return None, _no_results_reason(run, device)
        outcomes.append(o)
    test = stats.paired_accuracy(*outcomes)
    if test is None:
        return None, "the two runs have no problem in common"
    return test, None


def _environment_diff(cand: Run | None, base: Run | None) -> list[dict]:
    envs = [(r.environment or {}) if r is not None else None for r in (cand, base)]
    rows = []
    for key, label in ENVIRONMENT_KEYS:
        values = [None if e is None else e.get(key) for e in envs]
        if isinstance(values[0], dict) or isinstance(values[1], dict):
            values = [", ".join(f"{k}={v}" for k, v in sorted(v.items())) if isinstance(v, dict) else v
                      for v in values]
        if values[0] is None and values[1] is None and (key, label) not in VERSION_KEYS:
            continue
        rows.append({"key": key, "label": label, "candidate": values[0], "baseline": values[1],
                     "same": values[0] == values[1]})
    return rows


def comparison(session: Session, fingerprint: str, candidate: str, baseline: str) -> dict:
    """Everything the Compare page shows for one job and device pair (raises UserError like compare.build)."""
    cmp = compare.build(session, fingerprint, candidate, baseline)
    acc_table, speed_table = tables.tables(cmp)
    runs = {"candidate": _run_summary(cmp.candidate_run), "baseline": _run_summary(cmp.baseline_run)}
    test, why = accuracy_test(session, runs["candidate"], runs["baseline"], candidate, baseline)
    perf = {side: {p.batch_size: p for p in (run.perf if run is not None else [])}
            for side, run in (("candidate", cmp.candidate_run), ("baseline", cmp.baseline_run))}
    intervals = []
    for row in cmp.speed:
        bs = row["batch_size"]
        for metric in SPEED:
            label, attr = titled(metric), metric.name
            recs = [perf[s].get(bs) for s in ("candidate", "baseline")]
            raws = [(rec.raw or {}).get(attr) if rec is not None else None for rec in recs]
            interval = stats.ratio_interval(*raws)
            reason = None
            if interval is None:
                imported = any(r is not None and r["source"] == "imported" for r in runs.values())
                reason = ("a device has no record at this batch size" if None in recs else
                          "the ratio is undefined" if row[attr]["ratio"] is None else
                          f"no raw repeats stored{' (imported aggregates)' if imported else ''}" if not all(raws)
                          else "fewer than 2 repeats on a device")
            intervals.append({"batch_size": bs, "metric": label, "ratio": row[attr]["ratio"], "interval": interval,
                              "repeats": tuple(len(r) if r else 0 for r in raws), "why": reason})
    bandwidth = []
    for side, device in (("candidate", candidate), ("baseline", baseline)):
        for bs, p in sorted(perf[side].items()):
            bandwidth.append({"device": device, "batch_size": bs, "bandwidth_gbps": p.bandwidth_gbps,
                              "bandwidth_util": p.bandwidth_util, "peak_memory_bytes": p.peak_memory_bytes,
                              "cpu_other_cores": p.cpu_other_cores, "cpu_contention": p.cpu_contention})
    batch_agreement = {device: (run.accuracy.batch_agreement if run is not None and run.accuracy else None)
                       for device, run in ((candidate, cmp.candidate_run), (baseline, cmp.baseline_run))}
    return {"fingerprint": cmp.fingerprint, "job_name": cmp.job_name, "candidate": candidate, "baseline": baseline,
            "runs": runs, "accuracy": cmp.accuracy, "accuracy_table": acc_table, "speed_table": speed_table,
            "energy_table": tables.energy_table(cmp), "energy_meters": tables.meters_line(cmp),
            "accuracy_test": test, "accuracy_test_unavailable": why, "speed_intervals": intervals,
            "bandwidth": bandwidth, "token_agreement": cmp.token_agreement, "batch_agreement": batch_agreement,
            "environment": _environment_diff(cmp.candidate_run, cmp.baseline_run),
            "markdown": tables.render(cmp, "markdown"), "csv": tables.render(cmp, "csv")}


def batch_sizes(session: Session, fingerprint: str) -> list[int]:
    stmt = (select(PerfRecord.batch_size).join(Run).where(Run.fingerprint == fingerprint)
            .distinct().order_by(PerfRecord.batch_size))
    return list(session.scalars(stmt))


def trend(session: Session, fingerprint: str, candidate: str, baseline: str, metric: str,
          batch_size: int | None = None) -> dict:
    """Per-device values over time (every run with the metric) and the ratio points of db/trends.py: one each time
    either device got a run, pairing the latest run of each as the comparison table would at that moment."""
    if metric not in trends.METRICS:
        raise ValueError(f"unknown trend metric {metric!r} ({', '.join(trends.METRICS)})")
    if METRICS[metric].source == "humaneval":
        batch_size = None  # HumanEval's batch is part of the job, not a series of its own
    values, points = trends.job_trend(session, fingerprint, candidate, baseline, metric, batch_size)
    ratios = [{"at": p.at, "ratio": p.ratio, "candidate": p.candidate, "baseline": p.baseline,
               "candidate_run": p.candidate_run, "baseline_run": p.baseline_run} for p in points]
    return {"values": values, "ratios": ratios}


def job_runs(session: Session, fingerprint: str, device: str) -> list[dict]:
    """Runs of one job on one device, newest first, with whether they stored per-problem results."""
    has_results = (select(func.count()).select_from(ProblemResult)
                   .where(ProblemResult.run_id == Run.id).correlate(Run).scalar_subquery())
    stmt = (select(Run.id, Run.finished_at, Run.source, has_results)
            .where(Run.fingerprint == fingerprint, Run.device_class == device)
            .order_by(*(c.desc() for c in pairing.ORDER_BY)))
    return [{"id": i, "finished_at": at, "source": src, "results": n} for i, at, src, n in session.execute(stmt)]


def problem_diff(session: Session, candidate_run: str, baseline_run: str) -> list[dict]:
    """Per problem: each side's samples (completion, verdict, passed) and pass fraction (None: side has no result)."""
    stmt = (select(ProblemResult).where(ProblemResult.run_id.in_([candidate_run, baseline_run]))
            .order_by(ProblemResult.task_id, ProblemResult.sample))
    by_task: dict[str, dict] = {}
    for r in session.scalars(stmt):
        side = "candidate" if r.run_id == candidate_run else "baseline"
        entry = by_task.setdefault(r.task_id, {"task_id": r.task_id, "candidate": [], "baseline": []})
        entry[side].append({"sample": r.sample, "passed": r.passed, "verdict": r.verdict,
                            "completion": r.completion, "generated_tokens": r.generated_tokens})
    out = []
    for task in sorted(by_task, key=_task_key):
        e = by_task[task]
        for side in ("candidate", "baseline"):
            samples = e[side]
            e[f"{side}_pass"] = sum(s["passed"] for s in samples) / len(samples) if samples else None
        out.append(e)
    return out


def run_list(session: Session, devices: list[str] | None = None, fingerprint: str | None = None,
             source: str | None = None, id_prefix: str | None = None, limit: int = 200) -> tuple[int, list[dict]]:
    """(how many runs match, the newest `limit` of them) with their headline accuracy."""
    where = []
    if devices:
        where.append(Run.device_class.in_(devices))
    if fingerprint:
        where.append(Run.fingerprint == fingerprint)
    if source:
        where.append(Run.source == source)
    if id_prefix:
        where.append(Run.id.startswith(id_prefix.strip().lower(), autoescape=True))
    total = session.scalar(select(func.count()).select_from(Run).where(*where))
    stmt = (select(Run.id, Run.finished_at, Run.device_class, Run.device_name, Run.job_name, Run.model_name,
                   Run.fingerprint, Run.source, AccuracyRecord.passed, AccuracyRecord.problems,
                   AccuracyRecord.pass_at_1)
            .outerjoin(AccuracyRecord).where(*where).order_by(*(c.desc() for c in pairing.ORDER_BY))
            .limit(limit))
    return total, [dict(row._mapping) for row in session.execute(stmt)]


def _columns(obj) -> dict:
    return {c.key: getattr(obj, c.key) for c in inspect(obj).mapper.column_attrs}


def run_detail(session: Session, run_id: str) -> dict | None:
    """One run with everything stored about it: fields, environment, spec, perf, accuracy, every problem."""
    run = session.get(Run, run_id)
    if run is None:
        return None
    detail = _columns(run)
    detail["perf"] = [_columns(p) for p in run.perf]
    detail["accuracy"] = _columns(run.accuracy) if run.accuracy is not None else None
    detail["problems"] = [_columns(p) for p in sorted(run.problems, key=lambda p: (_task_key(p.task_id), p.sample))]
    return detail
