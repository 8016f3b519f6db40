"""The `runner` command line: submit runs, push run documents, print comparison tables, manage the store.

Heavy imports (torch, transformers, SQLAlchemy models) happen inside the commands, so `runner --help` is instant.
User errors print one line to stderr and exit non-zero (2 for bad input, 3 for an unusable store); no traceback.
Each module holds one command group; this one assembles them into `app`.
"""
from __future__ import annotations

import typer

from runner.cli import alerts, dashboard, doctor, fleet, precision, report, runs, serving, store

app = typer.Typer(
    help="Cross-device LLM comparison: run a job on this host's device, push the results to the SQL store, "
         "print 910B3-vs-A100 style comparison tables.\n\n"
         "Example: runner submit --device cpu --job jobs/demo-cpu.toml",
    no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]})
app.add_typer(runs.app)
app.add_typer(serving.app)
app.add_typer(report.app)
app.add_typer(doctor.app)
app.add_typer(dashboard.app)
app.add_typer(fleet.app)
app.add_typer(store.db_app, name="db")
app.add_typer(alerts.alerts_app, name="alerts")
app.add_typer(fleet.jobs_app, name="jobs")
app.add_typer(precision.app, name="precision")
