"""Alembic environment. Run through `runner db upgrade` (which passes its connection in), or programmatically.

render_as_batch=True lets the same migrations alter tables on SQLite. On PostgreSQL an advisory lock serialises
concurrent upgrades (several agents starting at once), so the schema is never migrated twice in parallel.
"""
from alembic import context
from sqlalchemy import create_engine, text

from db.models import Base

MIGRATION_LOCK_ID = 746_455_301  # arbitrary, constant: the pg_advisory_xact_lock key for schema upgrades


def run(connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_ID})
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True,
                      compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


config = context.config
connection = config.attributes.get("connection")
if connection is not None:
    run(connection)
else:
    from db.engine import resolve_url

    with create_engine(resolve_url(config.get_main_option("sqlalchemy.url"))).begin() as conn:
        run(conn)
