"""`runner alerts`: regression alerts on ratio drops (check for CI, list, ack, resolve, annotate)."""
from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.console import Console

from core.errors import UserError
from runner.cli.common import DbOpt, err, out, user_errors

alerts_app = typer.Typer(help="Regression alerts on ratio drops: check (for CI), list, ack, resolve, annotate.\n\n"
                              "Example: runner alerts check", no_args_is_help=True)


ConfigOpt = Annotated[Optional[str], typer.Option(
    "--config", metavar="FILE", help="Thresholds and suppressions (TOML); default $DEVCOMPARE_ALERTS_CONFIG or "
                                     "built-in thresholds (5% for speed).")]
PairOpt = Annotated[Optional[str], typer.Option(
    "--pairs", metavar="C:B,...", help="Device pairs to judge, e.g. 910B3:A100,910B4:A100 "
                                       "(default $DEVCOMPARE_ALERT_PAIRS or 910B3:A100).")]


def _alert_rows(rows) -> None:
    from rich.table import Table

    table = Table("id", "state", "ack", "series", "ratio", "change", "moved", "updated (UTC)")
    for a in rows:
        change = f"{a.change_pct:+.1f}%" if a.change_pct is not None else ""
        table.add_row(str(a.id), a.state, "yes" if a.acknowledged else "", a.series,
                      f"{a.ratio:.4g}" if a.ratio is not None else "", change, a.moved or "",
                      f"{a.updated_at:%Y-%m-%d %H:%M}")
    Console(width=max(out.width, 160)).print(table)


@alerts_app.command("check")
@user_errors
def alerts_check(db: DbOpt = None, config: ConfigOpt = None, pairs: PairOpt = None):
    """Judge every series and exit 1 if an active regression exists that is neither acknowledged nor suppressed.

    For CI: exit 0 = no active regression, 1 = active regression, 2 = usage error, 3 = store unusable.

    Example: runner alerts check --pairs 910B3:A100
    """
    import datetime as dt

    from db import alerts
    from db.detect import SeriesKey, suppressed_by
    from db.engine import open_store, session_scope
    from runner import alerting

    cfg, device_pairs = alerting.config(config), alerting.pairs(pairs)
    engine = open_store(db)
    for change in alerting.evaluate_and_deliver(engine, None, cfg, device_pairs):
        err.print(alerting.describe(change), highlight=False)
    now = dt.datetime.now(dt.timezone.utc)
    with session_scope(engine) as session:
        rows = [a for a in alerts.open_alerts(session) if a.state == "active"]
        failing = [a for a in rows if not a.acknowledged and not suppressed_by(
            SeriesKey(a.fingerprint, a.metric, a.candidate_device, a.baseline_device, a.batch_size), now,
            cfg.suppressions)]
        if rows:
            _alert_rows(rows)
    if failing:
        err.print(f"{len(failing)} active regression(s): see `runner alerts list`; acknowledge with "
                  "`runner alerts ack ID`, or annotate an intended change with `runner alerts annotate RUN_ID`",
                  highlight=False)
        raise typer.Exit(1)
    err.print("no active regression", highlight=False)


@alerts_app.command("list")
@user_errors
def alerts_list(db: DbOpt = None,
                all_states: Annotated[bool, typer.Option("--all", help="Include resolved alerts and outliers.")] = False):
    """List open (suspected, active) alerts, newest first; --all adds resolved ones and outliers.

    Example: runner alerts list --all
    """
    from sqlalchemy import select

    from db import alerts
    from db.engine import open_store, session_scope
    from db.models import Alert

    with session_scope(open_store(db)) as session:
        rows = (list(session.scalars(select(Alert).order_by(Alert.updated_at.desc()))) if all_states
                else alerts.open_alerts(session))
        if not rows:
            err.print("no alerts" if all_states else "no open alerts", highlight=False)
            return
        _alert_rows(rows)


def _set_alert(db: str | None, alert_id: int, **values) -> None:
    from db.engine import open_store, session_scope
    from db.models import Alert

    with session_scope(open_store(db)) as session:
        row = session.get(Alert, alert_id)
        if row is None:
            raise UserError(f"no alert with id {alert_id}: see `runner alerts list --all`")
        for name, value in values.items():
            setattr(row, name, value)
        err.print(f"alert {alert_id} ({row.series}): state {row.state}, acknowledged {row.acknowledged}",
                  highlight=False)


@alerts_app.command("ack")
@user_errors
def alerts_ack(alert_id: Annotated[int, typer.Argument(help="Alert id from `runner alerts list`.",
                                                       show_default=False)], db: DbOpt = None):
    """Acknowledge an alert: it stays listed, but `runner alerts check` no longer fails on it.

    Example: runner alerts ack 3
    """
    _set_alert(db, alert_id, acknowledged=True)


@alerts_app.command("resolve")
@user_errors
def alerts_resolve(alert_id: Annotated[int, typer.Argument(help="Alert id from `runner alerts list`.",
                                                           show_default=False)], db: DbOpt = None):
    """Mark an alert resolved by hand; detection will not reopen this episode.

    Example: runner alerts resolve 3
    """
    _set_alert(db, alert_id, state="resolved", resolved_manually=True)


@alerts_app.command("annotate")
@user_errors
def alerts_annotate(
    run_id: Annotated[str, typer.Argument(help="The first run after the intended change.", show_default=False)],
    note: Annotated[str, typer.Option(help="What changed, e.g. 'CANN 8.0 -> 8.1'.")],
    db: DbOpt = None,
):
    """Mark an intended change at a run (new CANN, driver, model code): the alert baseline restarts there.

    Example: runner alerts annotate 3f0c9f2e-... --note "CANN 8.0.RC3 -> 8.1.RC1"
    """
    import datetime as dt

    from db.engine import open_store, session_scope
    from db.models import Annotation, Run
    from runner import alerting

    engine = open_store(db)
    with session_scope(engine) as session:
        run = session.get(Run, run_id)
        if run is None:
            raise UserError(f"no run with id {run_id}: see `runner runs`")
        session.add(Annotation(run_id=run_id, note=note, created_at=dt.datetime.now(dt.timezone.utc)))
        fingerprint = run.fingerprint
    err.print(f"annotated run {run_id}: {note}", highlight=False)
    for change in alerting.evaluate_and_deliver(engine, [fingerprint]):
        err.print(alerting.describe(change), highlight=False)


