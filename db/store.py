"""Writing run documents into the store: one transaction per run, idempotent by the run's UUID.

A push is a few Core statements, not ORM objects: the run row is inserted with ON CONFLICT DO NOTHING on its id, so
a replay, or a concurrent push of the same run, inserts nothing and reports it; then one executemany per record table
and one statement for all problem rows; then the job's row in `job_devices` (its latest run, run count, where its
recent runs begin) is brought up to date in the same transaction. On PostgreSQL everything after the run row travels
in one round trip (the driver's pipeline mode): a push waits on the server a fixed few times, whatever its size.
`rebuild_summary` recomputes `job_devices` from the runs, should it ever be out of step.

Example:
    engine = open_store(url)
    store.push(engine, rundoc.read("run.json"))   # True: stored; False: it was already there
"""
from __future__ import annotations

import contextlib
import datetime as dt

from sqlalchemy import (Connection, Table, Update, bindparam, delete, func, insert, literal_column, select, text,
                        update)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from core.errors import StoreError
from core.metrics import REGISTRY, TIMED
from db.engine import transaction
from db import serving
from db.models import (RECENT, AccuracyRecord, JobDevice, PerfRecord, PrecisionRecord, ProblemResult, Run,
                       ServingRecord, utc)
from db.pairing import ORDER_BY

RUNS, PERF, ACCURACY, JOB_DEVICES = (m.__table__ for m in (Run, PerfRecord, AccuracyRecord, JobDevice))
SERVING = ServingRecord.__table__
PRECISION, PROBLEMS = PrecisionRecord.__table__, ProblemResult.__table__
# a perf record's settings and host load, then its untimed metrics (timed ones carry median/p10/p90 and raw repeats)
_PLAIN = ("prompt_tokens", "new_tokens", "warmup", "repeats", "cpu_own_cores", "cpu_other_cores", "cpu_contention",
          *(m.name for m in REGISTRY if m.source == "perf" and not m.timed))
_QUANTILES = [(name, q) for name in TIMED for q in ("p10", "p90") if f"{name}_{q}" in PERF.c]
PROBLEM_COLUMNS = ("run_id", "task_id", "sample", "completion", "passed", "verdict", "generated_tokens",
                   "generation_s", "exec_s")


def _time(value: str) -> dt.datetime:
    # stored as UTC: SQLite keeps no offset, so a local time with one would read back as a different instant
    return utc(dt.datetime.fromisoformat(value))


def _perf_row(run_id: str, rec: dict) -> dict:
    """One perf record's columns; every record gets the same keys (one executemany takes them all)."""
    row = {"run_id": run_id, "batch_size": rec["batch_size"], **{k: rec.get(k) for k in _PLAIN}}
    raw = {}
    for name in TIMED:
        stat = rec.get(name) or {}
        row[name] = stat.get("median")
        if stat.get("raw") is not None:
            raw[name] = stat["raw"]
    for name, q in _QUANTILES:
        row[f"{name}_{q}"] = (rec.get(name) or {}).get(q)
    row["raw"] = raw or None
    return row


def rows_from_document(doc: dict) -> tuple[dict, dict[Table, list[dict]], list[tuple]]:
    """(the run's row, {table: its record rows} as Core parameters, its problem rows in PROBLEM_COLUMNS order)."""
    spec, run_id = doc["job"]["spec"], doc["run_id"]
    run = dict(
        id=run_id, fingerprint=doc["job"]["fingerprint"], job_name=doc["job"]["name"],
        model_name=spec["model"]["name"], dtype=spec["model"]["dtype"], tensor_parallel=spec["model"]["tensor_parallel"],
        device_class=doc["device"]["class"], device_type=doc["device"]["type"], device_name=doc["device"]["name"],
        device_count=doc["device"]["count"], source=doc["source"], imported_from=doc.get("imported_from"),
        missing=doc["missing"], started_at=_time(doc["started_at"]), finished_at=_time(doc["finished_at"]),
        pushed_at=dt.datetime.now(dt.timezone.utc), environment=doc["environment"], spec=spec,
        token_probe=doc.get("token_probe"), extra=doc.get("extra"))
    records = {PERF: [_perf_row(run_id, r) for r in doc["perf"]], SERVING: serving.rows(run_id, doc.get("serving"))}
    records[PRECISION] = [dict(run_id=run_id, data=doc["precision"])] if doc.get("precision") else []
    he, problems = doc["humaneval"], []
    if he is not None:
        records[ACCURACY] = [dict(
            run_id=run_id, problems=he["problems"], samples_per_problem=he.get("samples_per_problem"),
            passed=he["passed"], pass_at_1=he["pass_at_k"].get("1"), pass_at_k=he["pass_at_k"],
            generation_s=he.get("generation_s"), execution_s=he.get("execution_s"),
            batch_agreement=he.get("batch_agreement"))]
        problems = [(run_id, r["task_id"], r["sample"], r["completion"], r["passed"], r["verdict"],
                     r.get("generated_tokens"), r.get("generation_s"), r.get("exec_s"))
                    for r in he.get("results") or []]
    return run, records, problems


def _refresh() -> Update:
    """UPDATE job_devices: each row's latest-run columns and recent_since, read from its job and device's runs down
    the pairing index (the run at its end; the RECENT-th from the end, or the oldest when fewer)."""
    jd = JOB_DEVICES.c
    mine = (RUNS.c.fingerprint == jd.fingerprint, RUNS.c.device_class == jd.device_class)
    newest_first = [RUNS.c[c.key].desc() for c in ORDER_BY]

    def newest(column, skip: int = 0):
        # the limits as literals, not parameters: with parameters PostgreSQL cannot reuse a generic plan of the
        # prepared statement and plans it again at every push, which costs more than running it
        return (select(column).where(*mine).order_by(*newest_first).offset(literal_column(str(skip)))
                .limit(literal_column("1")).scalar_subquery())

    oldest = select(func.min(RUNS.c.finished_at)).where(*mine).scalar_subquery()
    return update(JOB_DEVICES).values(
        latest_run=newest(RUNS.c.id), latest_finished_at=newest(RUNS.c.finished_at),
        latest_pushed_at=newest(RUNS.c.pushed_at), job_name=newest(RUNS.c.job_name),
        model_name=newest(RUNS.c.model_name),
        recent_since=func.coalesce(newest(RUNS.c.finished_at, RECENT - 1), oldest))


REFRESH = _refresh()


class _Statements:
    """A dialect's statements, built once: building one per push costs more than running it (cache keys)."""

    def __init__(self, dialect: str):
        try:
            upsert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}[dialect]  # both have ON CONFLICT
        except KeyError:
            raise StoreError(f"the store supports SQLite and PostgreSQL, not {dialect}") from None
        self.run = upsert(RUNS).on_conflict_do_nothing(index_elements=["id"]).execution_options(preserve_rowcount=True)
        # inline: no RETURNING of the new ids (nothing reads them, and a pipelined statement's rows cannot be read)
        self.records = {t: insert(t).inline() for t in (PERF, ACCURACY, SERVING, PRECISION)}
        key = [JOB_DEVICES.c.fingerprint, JOB_DEVICES.c.device_class]
        self.count = upsert(JOB_DEVICES).on_conflict_do_update(index_elements=key,
                                                               set_={"runs": JOB_DEVICES.c.runs + 1})
        self.refresh = REFRESH.where(key[0] == bindparam("fp"), key[1] == bindparam("device"))


_STATEMENTS: dict[str, _Statements] = {}


def _statements(conn: Connection) -> _Statements:
    name = conn.dialect.name
    if name not in _STATEMENTS:
        _STATEMENTS[name] = _Statements(name)
    return _STATEMENTS[name]


def _count_in_summary(conn: Connection, run: dict) -> None:
    """Count the run in its job_devices row, then refresh the row's latest and recent columns.

    The count is an upsert that locks the row; the runs are read by the next statement. On PostgreSQL (read
    committed: each statement takes its snapshot when it starts, in a pipeline too) that statement sees every run
    whose push held this row before, so two pushes of one job and device leave it right in either order. SQLite has
    one writer at a time."""
    sql = _statements(conn)
    conn.execute(sql.count, {"fingerprint": run["fingerprint"], "device_class": run["device_class"], "runs": 1,
                             "latest_run": run["id"], "latest_finished_at": run["finished_at"],
                             "latest_pushed_at": run["pushed_at"], "job_name": run["job_name"],
                             "model_name": run["model_name"], "recent_since": run["finished_at"]})
    conn.execute(sql.refresh, {"fp": run["fingerprint"], "device": run["device_class"]})


def _problems_sql(dialect: str) -> str:
    """One INSERT for all of a run's problem rows. PostgreSQL: the run id, then an array per other column, sent in
    binary and unnested by the server (a statement, so it can share the pipeline's round trip, which COPY cannot);
    SQLite: an executemany on the driver (no round trips to save). Either way the driver, not SQLAlchemy, handles
    the parameters: SQLAlchemy's per-row handling costs more than the database's work."""
    columns = ", ".join(PROBLEM_COLUMNS)
    if dialect == "postgresql":
        run_id, *rest = (f"%b::{PROBLEMS.c[c].type.compile(dialect=postgresql.dialect())}" for c in PROBLEM_COLUMNS)
        arrays = ", ".join(f"{t}[]" for t in rest)
        return f"INSERT INTO problem_results ({columns}) SELECT {run_id}, * FROM unnest({arrays})"
    return f"INSERT INTO problem_results ({columns}) VALUES ({', '.join('?' * len(PROBLEM_COLUMNS))})"


_PROBLEMS_SQL = {d: _problems_sql(d) for d in ("postgresql", "sqlite")}
# a JSON number may be spelled 2 or 2.0 whatever its column: an array holds one type, so numbers take their column's
_NUMBER_COLUMNS = [(i, kind) for i, c in enumerate(PROBLEM_COLUMNS)
                   if (kind := PROBLEMS.c[c].type.python_type) in (int, float)]


def _bulk_problems(conn: Connection, rows: list[tuple]) -> None:
    """The problem rows (all of one run) in one statement (_problems_sql); the columns are text, numbers and
    booleans, which the drivers store as SQLAlchemy would."""
    sql = _PROBLEMS_SQL[conn.dialect.name]
    if conn.dialect.name == "postgresql":
        columns: list = [list(c) for c in zip(*rows)]
        for i, kind in _NUMBER_COLUMNS:
            columns[i] = [None if v is None else kind(v) for v in columns[i]]
        columns[0] = rows[0][0]  # PROBLEM_COLUMNS begin with the run id, the same in every row
        conn.exec_driver_sql(sql, tuple(columns))
        return
    dbapi = conn.dialect.loaded_dbapi
    try:
        conn.connection.driver_connection.executemany(sql, rows)
    except dbapi.Error as e:  # the driver's errors leave as SQLAlchemy's, like every statement's
        raise DBAPIError.instance(sql, None, e, dbapi.Error) from None


@contextlib.contextmanager
def _one_round_trip(conn: Connection):
    """On PostgreSQL, the statements run inside are sent without waiting for each one's answer (psycopg's pipeline
    mode), and the answers are read together at the end: one round trip instead of one each. Nothing inside may read
    a result. A failure among them leaves as SQLAlchemy's error, as a statement's would. SQLite has no round trips;
    a libpq older than 14 has no pipeline mode: each statement then waits for its answer."""
    dbapi = conn.dialect.loaded_dbapi
    if conn.dialect.name != "postgresql" or not dbapi.Pipeline.is_supported():
        yield
        return
    try:
        with conn.connection.driver_connection.pipeline():
            yield
    except dbapi.Error as e:  # raised by the final read, outside any one statement
        raise DBAPIError.instance(None, None, e, dbapi.Error) from None


def _insert(conn: Connection, doc: dict) -> bool:
    run, records, problems = rows_from_document(doc)
    sql = _statements(conn)
    if conn.execute(sql.run, run).rowcount == 0:
        return False  # a replay, or a concurrent push of this run that committed first
    with _one_round_trip(conn):
        for table, rows in records.items():
            if rows:
                conn.execute(sql.records[table], rows)
        if problems:
            _bulk_problems(conn, problems)
        _count_in_summary(conn, run)
    return True


def push(engine: Engine, doc: dict) -> bool:
    """Insert one validated run document in one transaction. False if the run is already stored (a replay)."""
    with transaction(engine) as conn:
        return _insert(conn, doc)


def push_many(engine: Engine, docs: list[dict]) -> list[bool]:
    """Insert several documents in one transaction, each as `push` would (for bulk loads; agents push one by one)."""
    with transaction(engine) as conn:
        return [_insert(conn, doc) for doc in docs]


def rebuild_summary(engine: Engine) -> int:
    """Recompute job_devices from the runs; returns its rows. Pushes meanwhile wait (PostgreSQL) or queue (SQLite)."""
    with transaction(engine) as conn:
        if conn.dialect.name == "postgresql":  # a push's count waits until the rebuilt rows are committed
            conn.execute(text("LOCK TABLE job_devices IN SHARE ROW EXCLUSIVE MODE"))
        conn.execute(delete(JOB_DEVICES))
        # counts per job and device; the other columns get any value of the group, then REFRESH sets them
        groups = select(RUNS.c.fingerprint, RUNS.c.device_class, func.count(), func.max(RUNS.c.id),
                        *(func.max(RUNS.c[c]) for c in ("finished_at", "pushed_at", "job_name", "model_name",
                                                         "finished_at"))
                        ).group_by(RUNS.c.fingerprint, RUNS.c.device_class)
        rows = conn.execute(insert(JOB_DEVICES).from_select([c.key for c in JOB_DEVICES.c], groups)
                            .execution_options(preserve_rowcount=True)).rowcount
        conn.execute(REFRESH)
        return rows
