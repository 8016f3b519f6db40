"""Engine and session handling: which store, how to connect, one session scope, and the schema check.

The store is any SQLAlchemy URL: the one given, else `DEVCOMPARE_DB_URL`, else a SQLite file under the user's data
directory (WAL, busy timeout), so one command works on a laptop and a fleet points every host at PostgreSQL.
Driver errors leave this module as `StoreError`, one line that says what to do.
"""
from __future__ import annotations

import contextlib
import os
import shlex
import time
from pathlib import Path

from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, InvalidatePoolError, SQLAlchemyError
from sqlalchemy.orm import Session

from core.errors import StoreError, UserError

ENV_VAR = "DEVCOMPARE_DB_URL"
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
# libpq's connect_timeout, unless the URL sets its own (?connect_timeout=N): a host that accepts the TCP connection
# but never answers (a hung server, a proxy with nothing behind it) fails a command or heartbeat this soon
CONNECT_TIMEOUT_S = 5
# a pooled connection idle at least this long is pinged before use (one round trip), so a store restarted or a link
# dropped meanwhile costs a reconnect, not an error; one used more recently is not: pinging at every checkout would add
# a round trip to every push and heartbeat. Should a connection die within this window, its statement fails as on any
# lost connection (StoreError, the run kept in the outbox) and every pooled connection is replaced.
PING_AFTER_IDLE_S = 1.0


def default_url() -> str:
    from platformdirs import user_data_dir

    return f"sqlite:///{Path(user_data_dir('devcompare')) / 'devcompare.db'}"


def resolve_url(url: str | None = None) -> str:
    url = url or os.environ.get(ENV_VAR) or default_url()
    if url.startswith(("postgresql://", "postgres://")):  # psycopg 3 is the PostgreSQL driver we ship
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def display_url(url: str) -> str:
    """The URL with its password masked, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def upgrade_command(engine: Engine) -> str:
    """`runner db upgrade` as the user can paste it: without --db when this process finds the store by itself
    (DEVCOMPARE_DB_URL, else the default file), otherwise with the whole URL (a masked password would not connect)."""
    if engine.url == make_url(resolve_url(None)):
        return "runner db upgrade"
    return f"runner db upgrade --db {shlex.quote(engine.url.render_as_string(hide_password=False))}"


def _reason(error: DBAPIError, url) -> str:
    """The driver's first line; for a timeout, also what was tried (the driver says only that time ran out)."""
    reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error).splitlines()[0]
    if url.get_backend_name() == "postgresql" and "timeout" in reason and url.host and url.host not in reason:
        timeout = url.query.get("connect_timeout", CONNECT_TIMEOUT_S)
        reason += (f" (no answer from {url.host}:{url.port or 5432} within {timeout} s: the host took the "
                   "connection but no PostgreSQL server replied; a slow link can wait longer with "
                   "?connect_timeout=N in the URL)")
    return reason


def _sqlite_pragmas(dbapi_conn, _record):
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # readers (dashboard) never block the writer (submit)
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def make_engine(url: str | None = None, create: bool = True) -> Engine:
    """`create=False`: a SQLite file that does not exist is an error, not a new empty store (for commands that only
    make sense on a store that holds runs)."""
    url = resolve_url(url)
    try:
        parsed = make_url(url)
    except Exception:
        raise StoreError(f"not a database URL: {url!r} (example: sqlite:///runs.db or postgresql://user@host/db)") from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            path = Path(parsed.database).expanduser()
            if not create and not path.is_file():
                raise UserError(f"no store at {path} (check --db; `runner db upgrade` creates one)")
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # PostgreSQL (libpq): a store host that vanishes without a reset (power loss, partition) must fail a heartbeat
    # or push in seconds, not after the kernel's ~15 min of retransmissions, or other agents take the job meanwhile.
    args = dict(connect_timeout=CONNECT_TIMEOUT_S, keepalives=1, keepalives_idle=30, keepalives_interval=10,
                keepalives_count=3) if parsed.get_backend_name() == "postgresql" else {}
    args = {k: v for k, v in args.items() if k not in parsed.query}  # the URL's own settings win
    try:
        engine = create_engine(url, connect_args=args)
    except (ImportError, SQLAlchemyError) as e:
        raise StoreError(f"cannot use store {display_url(url)}: {e}") from None
    _ping_when_idle(engine)
    return engine


def _ping_when_idle(engine: Engine) -> None:
    """SQLAlchemy's pool_pre_ping, for connections idle PING_AFTER_IDLE_S or longer (a new one is not pinged)."""
    dialect = engine.dialect

    @event.listens_for(engine, "checkin")
    def _returned(_dbapi_conn, record):
        record.info["returned_at"] = time.monotonic()  # `info` is cleared when the connection is replaced

    @event.listens_for(engine, "checkout")
    def _ping(dbapi_conn, record, _proxy):
        returned = record.info.get("returned_at")
        if returned is None or time.monotonic() - returned < PING_AFTER_IDLE_S:
            return
        try:
            dialect.do_ping(dbapi_conn)
        except dialect.loaded_dbapi.Error as e:
            if dialect.is_disconnect(e, dbapi_conn, None):
                raise InvalidatePoolError() from e  # as pool_pre_ping: this and every older connection are replaced
            raise


@contextlib.contextmanager
def _store_errors(engine: Engine):
    try:
        yield
    except IntegrityError:
        raise  # a constraint the caller may expect (a replayed run), not an unusable store
    except DBAPIError as e:
        raise StoreError(f"store {display_url(str(engine.url))}: {_reason(e, engine.url)}") from None


@contextlib.contextmanager
def session_scope(engine: Engine):
    """One transaction: committed on success, rolled back on any error; driver errors become StoreError."""
    with _store_errors(engine), Session(engine, expire_on_commit=False) as session, session.begin():
        yield session


@contextlib.contextmanager
def transaction(engine: Engine):
    """As session_scope, on a Core connection: for code that only runs statements, a push above all, which need
    not pay for an ORM session's bookkeeping."""
    with _store_errors(engine), engine.begin() as conn:
        yield conn


def _alembic_config(connection=None):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except DBAPIError as e:
        raise StoreError(f"cannot reach store {display_url(str(engine.url))}: {_reason(e, engine.url)}") from None


def _known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    return {r.revision for r in ScriptDirectory.from_config(_alembic_config()).walk_revisions()}


class SchemaMismatch(StoreError):
    """The store's schema revision is not the one this code expects: behind it (upgrade the store) or newer than
    it (update this host's code)."""

    def __init__(self, message: str, current: str | None, head: str, newer: bool):
        super().__init__(message)
        self.current, self.head, self.newer = current, head, newer


def _newer_store(engine: Engine, current: str, head: str) -> SchemaMismatch:
    url = display_url(str(engine.url))
    return SchemaMismatch(
        f"the store {url} has schema revision {current}, which this host's code does not know (it ends at {head}): "
        "the store was upgraded by newer code, and this host's code is older than the store; update devcompare "
        "on this host (git pull, then pip install -e .), do not downgrade the store", current, head, newer=True)


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Bring the schema to the code's head revision; returns (before, after)."""
    from alembic import command
    from alembic.util import CommandError

    before, head = current_revision(engine), head_revision()
    if before is not None and before not in _known_revisions():
        raise _newer_store(engine, before, head)
    try:
        with engine.begin() as conn:
            command.upgrade(_alembic_config(conn), "head")
    except DBAPIError as e:
        raise StoreError(f"upgrade of {display_url(str(engine.url))} failed: {_reason(e, engine.url)}") from None
    except CommandError as e:  # Alembic's own (a revision it cannot place, a broken history): one line, no traceback
        raise StoreError(f"upgrade of {display_url(str(engine.url))} failed: {str(e).strip().splitlines()[0]}") from None
    return before, head


def ensure_schema(engine: Engine) -> None:
    """A new, empty store is created; a store behind (or ahead of) the code is an error naming the fix."""
    current, head = current_revision(engine), head_revision()
    if current == head:
        return
    if current is None and not inspect(engine).get_table_names():
        upgrade(engine)
        return
    if current is not None and current not in _known_revisions():
        raise _newer_store(engine, current, head)
    raise SchemaMismatch(f"the store {display_url(str(engine.url))} has schema revision {current or 'none'}, this "
                         f"code expects {head}: run `{upgrade_command(engine)}` (back up the database first)",
                         current, head, newer=False)


def open_store(url: str | None = None, create: bool = True) -> Engine:
    engine = make_engine(url, create)
    ensure_schema(engine)
    return engine
