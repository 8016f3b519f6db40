"""Writing run documents into the store: one transaction per run, idempotent by the run's UUID."""
from __future__ import annotations

import datetime as dt

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from core.metrics import REGISTRY, TIMED
from db.engine import session_scope
from db.models import AccuracyRecord, PerfRecord, ProblemResult, Run, utc

# a perf record's settings and host load, then its untimed metrics (timed ones carry median/p10/p90 and raw repeats)
_PLAIN = ("prompt_tokens", "new_tokens", "warmup", "repeats", "cpu_own_cores", "cpu_other_cores", "cpu_contention",
          *(m.name for m in REGISTRY if m.source == "perf" and not m.timed))


def _time(value: str) -> dt.datetime:
    # stored as UTC: SQLite keeps no offset, so a local time with one would read back as a different instant
    return utc(dt.datetime.fromisoformat(value))


def _perf_row(rec: dict) -> PerfRecord:
    row = PerfRecord(batch_size=rec["batch_size"], **{k: rec.get(k) for k in _PLAIN})
    raw = {}
    for name in TIMED:
        stat = rec.get(name) or {}
        setattr(row, name, stat.get("median"))
        for q in ("p10", "p90"):
            if hasattr(PerfRecord, f"{name}_{q}"):
                setattr(row, f"{name}_{q}", stat.get(q))
        if stat.get("raw") is not None:
            raw[name] = stat["raw"]
    row.raw = raw or None
    return row


def run_from_document(doc: dict) -> Run:
    spec = doc["job"]["spec"]
    run = Run(
        id=doc["run_id"], fingerprint=doc["job"]["fingerprint"], job_name=doc["job"]["name"],
        model_name=spec["model"]["name"], dtype=spec["model"]["dtype"], tensor_parallel=spec["model"]["tensor_parallel"],
        device_class=doc["device"]["class"], device_type=doc["device"]["type"], device_name=doc["device"]["name"],
        device_count=doc["device"]["count"], source=doc["source"], imported_from=doc.get("imported_from"),
        missing=doc["missing"], started_at=_time(doc["started_at"]), finished_at=_time(doc["finished_at"]),
        pushed_at=dt.datetime.now(dt.timezone.utc), environment=doc["environment"], spec=spec,
        token_probe=doc.get("token_probe"), extra=doc.get("extra"),
    )
    run.perf = [_perf_row(r) for r in doc["perf"]]
    he = doc["humaneval"]
    if he is not None:
        run.accuracy = AccuracyRecord(
            problems=he["problems"], samples_per_problem=he.get("samples_per_problem"), passed=he["passed"],
            pass_at_1=he["pass_at_k"].get("1"), pass_at_k=he["pass_at_k"], generation_s=he.get("generation_s"),
            execution_s=he.get("execution_s"), batch_agreement=he.get("batch_agreement"))
        run.problems = [ProblemResult(task_id=r["task_id"], sample=r["sample"], completion=r["completion"],
                                      passed=r["passed"], verdict=r["verdict"],
                                      generated_tokens=r.get("generated_tokens"),
                                      generation_s=r.get("generation_s"), exec_s=r.get("exec_s"))
                        for r in he.get("results") or []]
    return run


def push(engine: Engine, doc: dict) -> bool:
    """Insert one validated run document in one transaction. False if the run is already stored (a replay)."""
    with session_scope(engine) as session:
        if session.get(Run, doc["run_id"]) is not None:
            return False
    try:
        with session_scope(engine) as session:
            session.add(run_from_document(doc))
    except IntegrityError:
        # a concurrent push of the same run won the race; anything else is a real conflict
        with session_scope(engine) as session:
            if session.get(Run, doc["run_id"]) is not None:
                return False
        raise
    return True
