"""Throw-away PostgreSQL for the tests and the store benchmark: a private cluster, and fresh databases in it.

`initdb` refuses root, so the cluster runs as the unprivileged `postgres` user (or the current user when not root),
on a free port on 127.0.0.1, in a temporary directory that `remove()` deletes. It needs the PostgreSQL server
binaries (Debian's postgresql package, or `initdb` on PATH).

    cluster = PgCluster()
    url = new_database(cluster.url)   # postgresql://postgres@127.0.0.1:PORT/t_...
    ...
    cluster.remove()
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


class PgCluster:
    """A throw-away PostgreSQL cluster in a temporary directory, owned by the unprivileged `postgres` user (or the
    current user when not root), on a free port on 127.0.0.1. `stop()` and `start()` again keep the data and port,
    so a test can take the store away and bring it back."""

    def __init__(self):
        bindir = _pg_bin()
        if bindir is None:
            raise RuntimeError("PostgreSQL binaries not found: run `make test` (it installs postgresql) or set "
                               "DATABASE_URL")
        self.bindir, self.user = bindir, "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        pw = pwd.getpwnam(self.user)
        self.root = Path(tempfile.mkdtemp(prefix="devcompare-pg-"))
        os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self.data, self.port = self.root / "data", _free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}"
        self._as_user("initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        self.start()

    def _as_user(self, tool, *args, check=True):
        prefix = ["runuser", "-u", self.user, "--"] if os.geteuid() == 0 else []
        return subprocess.run(prefix + [str(self.bindir / tool)] + [str(a) for a in args], check=check,
                              capture_output=True, text=True)

    def start(self) -> None:
        self._as_user("pg_ctl", "-D", self.data, "-l", self.root / "log", "-w", "-t", "60", "start", "-o",
                      f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                      "-c max_connections=200")

    def stop(self, mode: str = "immediate") -> None:
        """`immediate` is a crash (open transactions are cut off); `fast` a clean shutdown."""
        self._as_user("pg_ctl", "-D", self.data, "-m", mode, "-w", "stop", check=False)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def new_database(server: str) -> str:
    """Create an empty database on `server` (a URL without database part); returns its URL."""
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
