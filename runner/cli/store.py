"""`runner db`: create or upgrade the store's schema, print its revision, rebuild its per-job summary."""
from __future__ import annotations

import typer

from runner.cli.common import DbOpt, err, out, user_errors

db_app = typer.Typer(help="Manage the store's schema.\n\nExample: runner db upgrade --db sqlite:///runs.db",
                     no_args_is_help=True)


@db_app.command("upgrade")
@user_errors
def db_upgrade(db: DbOpt = None):
    """Create the store's tables or bring them to this code's schema revision (Alembic).

    Example: runner db upgrade --db postgresql://runner@db-host/devcompare
    """
    from db.engine import display_url, make_engine, resolve_url, upgrade

    before, after = upgrade(make_engine(db))
    err.print(f"{display_url(resolve_url(db))}: schema {before or 'empty'} -> {after}", highlight=False)


@db_app.command("current")
@user_errors
def db_current(db: DbOpt = None):
    """Print the store's schema revision and the one this code expects.

    Example: runner db current
    """
    from db.engine import current_revision, display_url, head_revision, make_engine, resolve_url

    cur = current_revision(make_engine(db))
    out.print(f"{display_url(resolve_url(db))}: revision {cur or 'none (empty)'}, code expects {head_revision()}",
              highlight=False)


@db_app.command("rebuild-summary")
@user_errors
def db_rebuild_summary(db: DbOpt = None):
    """Recompute the per-job summary (latest run, run count and recent runs of each job on each device) from the runs.

    Pushes keep it current; rebuild it if it was ever written around (a restored backup of only some tables, runs
    inserted by hand). Pushes wait meanwhile.

    A SQLite store file that does not exist is refused (exit 2): rebuilding would only create an empty store there.

    Example: runner db rebuild-summary --db postgresql://runner@db-host/devcompare
    """
    from db.engine import display_url, open_store, resolve_url
    from db.store import rebuild_summary

    rows = rebuild_summary(open_store(db, create=False))
    err.print(f"{display_url(resolve_url(db))}: summary rebuilt, {rows} job/device row(s)", highlight=False)
