"""`runner dashboard`: serve the Streamlit dashboard over the store."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from core.errors import UserError
from runner.cli.common import DbOpt, err, user_errors

app = typer.Typer()


@app.command()
@user_errors
def dashboard(
    port: Annotated[int, typer.Option(help="Port to serve the dashboard on.")] = 8501,
    address: Annotated[str, typer.Option(help="Address to listen on: 127.0.0.1 keeps it on this host; 0.0.0.0 "
                                              "serves other hosts (in a container, behind a proxy).")] = "127.0.0.1",
    db: DbOpt = None,
):
    """Start the Streamlit dashboard (Compare, Trends, Problems, Runs, Alerts) over the store; Ctrl-C stops it.

    Example: runner dashboard --port 8501 --db postgresql://runner@db-host/devcompare
    """
    import importlib.util
    import os
    import sys

    from db.engine import ENV_VAR, display_url, resolve_url

    if importlib.util.find_spec("streamlit") is None:
        raise UserError("the dashboard needs Streamlit: pip install -e . (or pip install streamlit altair)")
    url = resolve_url(db)
    app_py = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
    cmd = [sys.executable, "-m", "streamlit", "run", str(app_py), "--server.port", str(port),
           "--server.address", address, "--server.headless", "true", "--browser.gatherUsageStats", "false",
           "--client.toolbarMode", "minimal"]
    err.print(f"dashboard on http://{address}:{port} reading {display_url(url)}", highlight=False)
    # exec, not a child: Ctrl-C and `docker stop` reach Streamlit itself. The URL travels in the environment, not
    # on the command line, so a password never shows in `ps`.
    sys.stderr.flush()
    os.execve(sys.executable, cmd, {**os.environ, ENV_VAR: url})


