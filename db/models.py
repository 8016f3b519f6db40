"""SQLAlchemy 2.0 models of the store: runs, their perf and accuracy records, and every problem's outcome.

One row in `runs` per run document; records hang off it and are deleted with it. Metric columns carry their unit in
the name. Raw timing repeats stay as JSON beside the medians (they are read for intervals, never filtered on).
"""
from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Optional

from sqlalchemy import JSON, BigInteger, DateTime, ForeignKey, Index, MetaData, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utc(t: dt.datetime | None) -> dt.datetime | None:
    """A stored time as an aware UTC datetime: SQLite hands back naive UTC, PostgreSQL answers in the session's time
    zone. Use it wherever a stored time is compared, ordered or shown."""
    if t is None:
        return None
    return t.replace(tzinfo=dt.timezone.utc) if t.tzinfo is None else t.astimezone(dt.timezone.utc)

# Named constraints, so Alembic can alter them on SQLite (batch mode) and PostgreSQL alike.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

RunId = Annotated[str, mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)]
# records whose unique constraint starts with run_id: that index serves lookups by run (a second one would only
# slow every push)
RecordRunId = Annotated[str, mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))]
UtcTime = Annotated[dt.datetime, mapped_column(DateTime(timezone=True))]
Json = Annotated[Any, mapped_column(JSON(none_as_null=True))]  # Python None is SQL NULL, not JSON null


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # the document's UUID: pushes are idempotent
    fingerprint: Mapped[str] = mapped_column(String(16))
    job_name: Mapped[str] = mapped_column(String(200))
    model_name: Mapped[str] = mapped_column(String(300))
    dtype: Mapped[str] = mapped_column(String(16))
    tensor_parallel: Mapped[int]
    device_class: Mapped[str] = mapped_column(String(32))
    device_type: Mapped[str] = mapped_column(String(8))
    device_name: Mapped[Optional[str]] = mapped_column(String(200))
    device_count: Mapped[Optional[int]]
    source: Mapped[str] = mapped_column(String(16))  # measured | imported
    imported_from: Mapped[Optional[str]] = mapped_column(Text)
    missing: Mapped[Json]  # fields the source lacks (imported runs), so nothing is mistaken for a measured zero
    started_at: Mapped[UtcTime]
    finished_at: Mapped[UtcTime]
    pushed_at: Mapped[UtcTime]
    environment: Mapped[Json]
    spec: Mapped[Json]
    token_probe: Mapped[Optional[Json]]  # greedy ids of fixed prompts: cross-device token agreement
    extra: Mapped[Optional[Json]]

    perf: Mapped[list[PerfRecord]] = relationship(back_populates="run", cascade="all, delete-orphan",
                                                  order_by="PerfRecord.batch_size")
    accuracy: Mapped[Optional[AccuracyRecord]] = relationship(back_populates="run", cascade="all, delete-orphan")
    problems: Mapped[list[ProblemResult]] = relationship(back_populates="run", cascade="all, delete-orphan")

    # "latest run of device D for fingerprint F" is the query every table starts from: the whole pairing order
    # (db.pairing.ORDER_BY) is in the index, so the latest run, or the last N, is a walk down its end, no sort
    __table_args__ = (Index("ix_runs_fingerprint_device_order", "fingerprint", "device_class", "finished_at",
                            "pushed_at", "id"),
                      # the newest runs of the whole store (run lists) are the end of this one
                      Index("ix_runs_order", "finished_at", "pushed_at", "id"))


class PerfRecord(Base):
    __tablename__ = "perf_records"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[RecordRunId]
    batch_size: Mapped[int]
    prompt_tokens: Mapped[Optional[int]]
    new_tokens: Mapped[Optional[int]]
    warmup: Mapped[Optional[int]]
    repeats: Mapped[Optional[int]]
    # medians, with p10/p90 where repeats exist; NULL where an imported source did not publish the figure
    ttft_ms: Mapped[Optional[float]]
    ttft_ms_p10: Mapped[Optional[float]]
    ttft_ms_p90: Mapped[Optional[float]]
    e2e_ms: Mapped[Optional[float]]
    tpot_ms: Mapped[Optional[float]]
    first_token_tokens_per_s: Mapped[Optional[float]]
    first_token_tokens_per_s_p10: Mapped[Optional[float]]
    first_token_tokens_per_s_p90: Mapped[Optional[float]]
    decode_tokens_per_s: Mapped[Optional[float]]
    decode_tokens_per_s_p10: Mapped[Optional[float]]
    decode_tokens_per_s_p90: Mapped[Optional[float]]
    raw: Mapped[Optional[Json]]  # {"ttft_ms": [...], "e2e_ms": [...], ...}: every timed repeat
    peak_memory_bytes: Mapped[Optional[int]] = mapped_column(BigInteger)
    bandwidth_gbps: Mapped[Optional[float]]
    bandwidth_util: Mapped[Optional[float]]
    cpu_own_cores: Mapped[Optional[float]]
    cpu_other_cores: Mapped[Optional[float]]
    cpu_contention: Mapped[Optional[bool]]

    run: Mapped[Run] = relationship(back_populates="perf")
    __table_args__ = (UniqueConstraint("run_id", "batch_size"),)


class AccuracyRecord(Base):
    __tablename__ = "accuracy_records"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    problems: Mapped[int]
    samples_per_problem: Mapped[Optional[int]]
    passed: Mapped[int]
    pass_at_1: Mapped[Optional[float]]
    pass_at_k: Mapped[Json]  # {"1": 0.33, "10": 0.5}
    generation_s: Mapped[Optional[float]]
    execution_s: Mapped[Optional[float]]
    batch_agreement: Mapped[Optional[Json]]  # batched vs batch-1 greedy completions: {"prompts", "identical", "share"}

    run: Mapped[Run] = relationship(back_populates="accuracy")


class ProblemResult(Base):
    __tablename__ = "problem_results"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[RecordRunId]
    task_id: Mapped[str] = mapped_column(String(64))
    sample: Mapped[int]
    completion: Mapped[str] = mapped_column(Text)
    passed: Mapped[bool]
    verdict: Mapped[str] = mapped_column(Text)
    generated_tokens: Mapped[Optional[int]]
    generation_s: Mapped[Optional[float]]
    exec_s: Mapped[Optional[float]]

    run: Mapped[Run] = relationship(back_populates="problems")
    __table_args__ = (UniqueConstraint("run_id", "task_id", "sample"),)


class PrecisionRecord(Base):
    """A run document's `precision` section as it is (core.precision reads it): a table of its own because it is the
    largest part of a run and only precision comparisons read it."""

    __tablename__ = "precision_records"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    data: Mapped[Json]


# Runs per device that job_devices.recent_since keeps in reach: a pair's last RECENT - 1 points need, for each device,
# its runs among them and the one before them.
RECENT = 21


class JobDevice(Base):
    """One row per job (fingerprint) and device class with runs: its latest run in pairing order, how many runs it
    has, and where its recent runs begin. db.store keeps it current in each push's transaction, so job lists and the
    Overview read a row per job and device instead of every run; `runner db rebuild-summary` rebuilds it."""

    __tablename__ = "job_devices"

    fingerprint: Mapped[str] = mapped_column(String(16), primary_key=True)
    device_class: Mapped[str] = mapped_column(String(32), primary_key=True)
    runs: Mapped[int]
    latest_run: Mapped[str] = mapped_column(String(36))  # no foreign key: a rebuild is the repair, not a cascade
    latest_finished_at: Mapped[UtcTime]
    latest_pushed_at: Mapped[UtcTime]
    job_name: Mapped[str] = mapped_column(String(200))  # of the latest run (display names are not fingerprinted)
    model_name: Mapped[str] = mapped_column(String(300))
    # finished_at of the RECENT-th latest run (the oldest when fewer): runs finished at or after it hold the device's
    # last RECENT runs, so "the last points of a pair" is one index range per device (db.overview)
    recent_since: Mapped[UtcTime]


class Alert(Base):
    """One regression episode of one series (db/alerts), upserted on (series, the run pair that opened it)."""

    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(primary_key=True)
    series: Mapped[str] = mapped_column(String(200), index=True)  # "fp/metric/910B3-vs-A100/bs1"
    fingerprint: Mapped[str] = mapped_column(String(16))
    metric: Mapped[str] = mapped_column(String(64))
    candidate_device: Mapped[str] = mapped_column(String(32))
    baseline_device: Mapped[str] = mapped_column(String(32))
    batch_size: Mapped[Optional[int]]
    level: Mapped[Optional[str]] = mapped_column(String(32))  # serving metrics: the load level, "c4" or "r2.5"
    opened_candidate_run: Mapped[str] = mapped_column(String(36))
    opened_baseline_run: Mapped[str] = mapped_column(String(36))
    latest_candidate_run: Mapped[str] = mapped_column(String(36))
    latest_baseline_run: Mapped[str] = mapped_column(String(36))
    state: Mapped[str] = mapped_column(String(20))  # suspected | active | resolved | outlier
    moved: Mapped[Optional[str]] = mapped_column(String(64))  # "candidate fell", "baseline rose"
    baseline_ratio: Mapped[Optional[float]]
    ratio: Mapped[Optional[float]]
    change_pct: Mapped[Optional[float]]
    reason: Mapped[Optional[str]] = mapped_column(Text)
    acknowledged: Mapped[bool] = mapped_column(default=False)
    resolved_manually: Mapped[bool] = mapped_column(default=False)  # `runner alerts resolve`: detection won't reopen it
    opened_at: Mapped[UtcTime]
    updated_at: Mapped[UtcTime]

    __table_args__ = (UniqueConstraint("series", "opened_candidate_run", "opened_baseline_run"),)


class AlertSeriesState(Base):
    """Where alert judging stopped for one job and device pair (db.alerts.checkpoint): the last run judged, what the
    checks that it still holds read, and each series' detector state, so an evaluation after a push judges only the
    runs that arrived since. Written in the evaluation's transaction; `runner alerts check --rebuild` rewrites it."""

    __tablename__ = "alert_series_state"

    fingerprint: Mapped[str] = mapped_column(String(16), primary_key=True)
    candidate_device: Mapped[str] = mapped_column(String(32), primary_key=True)
    baseline_device: Mapped[str] = mapped_column(String(32), primary_key=True)
    data: Mapped[Json]


class AlertSeriesSnapshot(Base):
    """The alert_series_state of one job and device pair as it stood after every few runs judged
    (db.alerts.snapshots): a run that arrives out of order, or an annotated or deleted run judged already, rewinds
    judging to the newest snapshot before it instead of judging the whole job again. `seq`: runs judged up to it;
    the order key columns name its last run."""

    __tablename__ = "alert_series_snapshot"

    fingerprint: Mapped[str] = mapped_column(String(16), primary_key=True)
    candidate_device: Mapped[str] = mapped_column(String(32), primary_key=True)
    baseline_device: Mapped[str] = mapped_column(String(32), primary_key=True)
    seq: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    finished_at: Mapped[UtcTime]
    pushed_at: Mapped[UtcTime]
    run_id: Mapped[str] = mapped_column(String(36))
    data: Mapped[Json]


class Annotation(Base):
    """An intended change at a run (new CANN, new driver, new model code): restarts the alert baseline there."""

    __tablename__ = "annotations"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[RunId]
    note: Mapped[str] = mapped_column(Text)
    created_at: Mapped[UtcTime]


class QueueJob(Base):
    """One job for one device class in the fleet queue: `runner enqueue` adds it, a `runner agent` claims and runs it.

    States: queued -> running (claimed) -> done | failed; queued or running -> cancelled. A claim carries a random
    token; every later write by the agent names it, so an agent whose job was taken away (stale heartbeat) cannot
    overwrite the job's new owner.
    """

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    device_class: Mapped[str] = mapped_column(String(32))
    job_name: Mapped[str] = mapped_column(String(200))
    fingerprint: Mapped[str] = mapped_column(String(16))
    spec: Mapped[Json]  # the job spec as a dict (JobSpec.to_dict): an agent needs no file
    state: Mapped[str] = mapped_column(String(16))  # queued | running | done | failed | cancelled
    attempts: Mapped[int]  # claims so far, the current one included
    max_attempts: Mapped[int]
    created_at: Mapped[UtcTime]
    claimed_by: Mapped[Optional[str]] = mapped_column(String(200))  # agent name: host:pid
    claim_token: Mapped[Optional[str]] = mapped_column(String(36))
    claimed_at: Mapped[Optional[UtcTime]]
    heartbeat_at: Mapped[Optional[UtcTime]]
    finished_at: Mapped[Optional[UtcTime]]
    run_id: Mapped[Optional[str]] = mapped_column(String(36))  # no foreign key: the run may wait in an outbox
    error: Mapped[Optional[str]] = mapped_column(Text)  # why the last attempt failed

    # claiming scans queued jobs of one device class in id order; the stale check scans running ones
    __table_args__ = (Index("ix_jobs_state_device_id", "state", "device_class", "id"),)


class ServingRecord(Base):
    """One load level of a serving run (runner/serving): a concurrency or a request rate, its latency distributions
    (median, p90, p99 over the level's completed requests), throughputs, goodput and failures. Metric columns are
    named as in core.metrics; the run's server self-description is in runs.environment."""

    __tablename__ = "serving_records"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[RunId]
    mode: Mapped[str] = mapped_column(String(16))  # concurrency | rate
    level: Mapped[float]  # requests in flight, or requests/s
    requests: Mapped[int]
    completed: Mapped[int]
    failed_requests: Mapped[int]
    not_sent: Mapped[Optional[int]]
    failures: Mapped[Optional[Json]]  # [{"reason", "count", "example"}]
    duration_s: Mapped[float]
    input_tokens: Mapped[Optional[int]]
    output_tokens: Mapped[Optional[int]]
    token_source: Mapped[Optional[str]] = mapped_column(String(16))  # usage | tokenizer | mixed
    exact_output_share: Mapped[Optional[float]]
    serving_ttft_ms: Mapped[Optional[float]]
    serving_ttft_ms_p90: Mapped[Optional[float]]
    serving_ttft_ms_p99: Mapped[Optional[float]]
    serving_tpot_ms: Mapped[Optional[float]]
    serving_tpot_ms_p90: Mapped[Optional[float]]
    serving_tpot_ms_p99: Mapped[Optional[float]]
    serving_itl_ms: Mapped[Optional[float]]
    serving_itl_ms_p90: Mapped[Optional[float]]
    serving_itl_ms_p99: Mapped[Optional[float]]
    serving_e2e_ms: Mapped[Optional[float]]
    serving_e2e_ms_p90: Mapped[Optional[float]]
    serving_e2e_ms_p99: Mapped[Optional[float]]
    request_throughput: Mapped[Optional[float]]
    output_throughput: Mapped[Optional[float]]
    goodput: Mapped[Optional[float]]
    raw: Mapped[Optional[Json]]  # per completed request: ttft_ms, tpot_ms, e2e_ms, output_tokens

    __table_args__ = (UniqueConstraint("run_id", "mode", "level"),)
