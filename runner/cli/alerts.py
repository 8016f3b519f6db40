"""`runner alerts`: regression alerts on ratio drops (check for CI, list, ack, resolve, annotate)."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from core.errors import UserError
from runner.cli.common import DbOpt, err, out, print_wide, user_errors

alerts_app = typer.Typer(help="Regression alerts on ratio drops: check (for CI), list, ack, resolve, annotate.\n\n"
                              "Example: runner alerts check", no_args_is_help=True)


ConfigOpt = Annotated[Optional[str], typer.Option(
    "--config", metavar="FILE", help="Thresholds and suppressions (TOML); default $DEVCOMPARE_ALERTS_CONFIG or "
                                     "built-in thresholds (5% for speed).")]
PairOpt = Annotated[Optional[str], typer.Option(
    "--pairs", metavar="C:B,...", help="Device pairs to judge, e.g. 910B3:A100,910B4:A100 "
                                       "(default $DEVCOMPARE_ALERT_PAIRS or 910B3:A100).")]


AlertFormatOpt = Annotated[str, typer.Option("--format", "-f", help="table, or json (the same fields, for scripts).")]


def print_alerts(rows: list[dict], fmt: str = "table") -> None:
    """Alerts as `runner alerts list` shows them (db.alerts.listing.FIELDS): a table, or a JSON list."""
    import json

    from rich.table import Table

    from db.alerts.listing import FIELDS

    if fmt == "json":
        shown = [{k: a[k].isoformat() if k == "updated_at" else a[k] for k, _ in FIELDS} for a in rows]
        out.print(json.dumps(shown, indent=1), markup=False, highlight=False)
        return
    table = Table(*(header for _, header in FIELDS))
    for a in rows:
        table.add_row(str(a["id"]), a["state"], "yes" if a["acknowledged"] else "", a["series"],
                      f"{a['ratio']:.4g}" if a["ratio"] is not None else "",
                      f"{a['change_pct']:+.1f}%" if a["change_pct"] is not None else "", a["moved"] or "",
                      f"{a['updated_at']:%Y-%m-%d %H:%M}", a["reason"] or "")
    print_wide(table, 160)


def _print_changes(changes) -> None:
    from db.alerts.deliver import describe

    for change in changes:
        err.print(describe(change), highlight=False)


def after_push(engine, fingerprints: list[str]) -> None:
    """Judge the series the new runs belong to; a state change is printed (and sent to the webhook if set)."""
    from db.alerts.deliver import evaluate_and_deliver

    _print_changes(evaluate_and_deliver(engine, fingerprints))


@alerts_app.command("check")
@user_errors
def alerts_check(db: DbOpt = None, config: ConfigOpt = None, pairs: PairOpt = None,
                 rebuild: Annotated[bool, typer.Option(
                     "--rebuild", help="Judge every job from its first run, not from where the last evaluation "
                                       "stopped, and rewrite those checkpoints and the snapshots late runs rewind to "
                                       "(the repair if they are ever out of step; the alerts left are the same).")] = False):
    """Judge every series and exit 1 if an active regression exists that is neither acknowledged nor suppressed.

    For CI: exit 0 = no active regression, 1 = active regression, 2 = usage error, 3 = store unusable.

    Example: runner alerts check --pairs 910B3:A100   (or: runner alerts check --rebuild)
    """
    from db.alerts import ci, config as settings
    from db.engine import open_store

    cfg, device_pairs = settings.configured(config), settings.pairs(pairs)
    result = ci.check(open_store(db), cfg, device_pairs, rebuild)
    _print_changes(result.changes)
    if result.active:
        print_alerts(result.active)
    if result.failing:
        err.print(f"{len(result.failing)} active regression(s): see `runner alerts list`; acknowledge with "
                  "`runner alerts ack ID`, or annotate an intended change with `runner alerts annotate RUN_ID`",
                  highlight=False)
        raise typer.Exit(1)
    err.print("no active regression", highlight=False)


@alerts_app.command("list")
@user_errors
def alerts_list(db: DbOpt = None, fmt: AlertFormatOpt = "table",
                all_states: Annotated[bool, typer.Option("--all", help="Include resolved ones and outliers.")] = False):
    """List open (suspected, active) alerts, newest first; --all adds resolved ones and outliers.

    Example: runner alerts list --all --format json
    """
    from db.alerts.listing import listed
    from db.engine import open_store, session_scope

    if fmt not in ("table", "json"):
        raise UserError(f"--format must be table or json, not {fmt!r}")
    with session_scope(open_store(db)) as session:
        rows = listed(session, all_states)
    if fmt == "table" and not rows:
        err.print("no alerts" if all_states else "no open alerts", highlight=False)
        return
    print_alerts(rows, fmt)


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

    engine = open_store(db)
    with session_scope(engine) as session:
        run = session.get(Run, run_id)
        if run is None:
            raise UserError(f"no run with id {run_id}: see `runner runs`")
        session.add(Annotation(run_id=run_id, note=note, created_at=dt.datetime.now(dt.timezone.utc)))
        fingerprint = run.fingerprint
    err.print(f"annotated run {run_id}: {note}", highlight=False)
    after_push(engine, [fingerprint])


