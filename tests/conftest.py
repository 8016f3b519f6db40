"""Shared fixtures: a temporary SQLite store per test, and a real PostgreSQL server for the whole session.

PostgreSQL: `DATABASE_URL` when given; otherwise the tests start their own cluster (db/testing.py) with the
installed PostgreSQL binaries, as an unprivileged user, removed at the end.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from db.testing import PgCluster, new_database

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _isolated_store(tmp_path, monkeypatch):
    """No test touches the user's real store or outbox: both default into the test's temporary directory."""
    monkeypatch.setenv("DEVCOMPARE_DB_URL", f"sqlite:///{tmp_path / 'store.db'}")
    monkeypatch.setenv("DEVCOMPARE_OUTBOX", str(tmp_path / "outbox"))


@pytest.fixture(scope="session")
def postgres_server():
    """Base URL of a PostgreSQL server (no database part)."""
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    cluster = PgCluster()
    try:
        yield cluster.url
    finally:
        cluster.remove()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request, tmp_path):
    """A fresh, empty store on each backend: the same store tests run on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return new_database(request.getfixturevalue("postgres_server"))


@pytest.fixture
def reference_docs():
    from core import rundoc

    return [rundoc.read(REPO / "examples" / f"reference-{d}.json") for d in ("910B3", "A100")]
