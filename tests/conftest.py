"""Shared fixtures: a temporary SQLite store per test, and a real PostgreSQL server for the whole session.

PostgreSQL: `DATABASE_URL` when given; otherwise the tests start their own cluster with the installed PostgreSQL
binaries. `initdb` refuses root, so the cluster runs as the unprivileged `postgres` user (or the current user when
not root), on a free port on 127.0.0.1, in a temporary directory removed at the end.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _isolated_store(tmp_path, monkeypatch):
    """No test touches the user's real store: the default URL points into the test's temporary directory."""
    monkeypatch.setenv("DEVCOMPARE_DB_URL", f"sqlite:///{tmp_path / 'store.db'}")


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_server():
    """Base URL of a PostgreSQL server (no database part)."""
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    bindir = _pg_bin()
    if bindir is None:
        pytest.fail("PostgreSQL binaries not found: run `make test` (it installs postgresql) or set DATABASE_URL")
    user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    pw = pwd.getpwnam(user)
    root = Path(tempfile.mkdtemp(prefix="devcompare-pg-"))
    os.chown(root, pw.pw_uid, pw.pw_gid)
    data, port = root / "data", _free_port()

    def as_user(*cmd):
        prefix = ["runuser", "-u", user, "--"] if os.geteuid() == 0 else []
        return subprocess.run(prefix + [str(c) for c in cmd], check=True, capture_output=True, text=True)

    as_user(bindir / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
    as_user(bindir / "pg_ctl", "-D", data, "-l", root / "log", "-w", "-t", "60", "start", "-o",
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run((["runuser", "-u", user, "--"] if os.geteuid() == 0 else [])
                       + [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def _new_pg_database(server: str) -> str:
    import psycopg

    name = "t_" + uuid.uuid4().hex[:12]
    for _ in range(50):
        try:
            with psycopg.connect(server + "/postgres", autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            return f"{server}/{name}"
        except psycopg.OperationalError:
            time.sleep(0.2)  # server still starting
    raise RuntimeError("PostgreSQL did not accept connections")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request, tmp_path):
    """A fresh, empty store on each backend: the same store tests run on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return _new_pg_database(request.getfixturevalue("postgres_server"))


@pytest.fixture
def reference_docs():
    from runner import rundoc

    return [rundoc.read(REPO / "examples" / f"reference-{d}.json") for d in ("910B3", "A100")]
