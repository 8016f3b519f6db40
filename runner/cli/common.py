"""What every command group shares: the consoles, the --db and --format options, one-line user errors."""
from __future__ import annotations

import functools
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from core.errors import UserError

err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

DbOpt = Annotated[Optional[str], typer.Option(
    "--db", metavar="URL", help="SQLAlchemy URL of the store (default: $DEVCOMPARE_DB_URL, else a SQLite file in "
                                "the user data dir). Example: --db postgresql://runner@db-host/devcompare")]
FormatOpt = Annotated[str, typer.Option("--format", "-f", help="Table format: markdown, csv or json.")]


def user_errors(fn):
    """Turn UserError into one red line on stderr and its exit code."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            err.print(f"[red]error:[/red] {escape(str(e))}", highlight=False, markup=True)
            raise typer.Exit(e.exit_code) from None
    return wrapper


def check_format(fmt: str) -> None:
    if fmt not in ("markdown", "csv", "json"):
        raise UserError(f"--format must be markdown, csv or json, not {fmt!r}")


def print_wide(table, width: int) -> None:
    """Print a table at least `width` columns wide: ids and fingerprints in it are copied, never truncated."""
    Console(width=max(out.width, width)).print(table)
