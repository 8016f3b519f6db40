"""The dashboard's only way to the store: which store, one cached engine, and thin cached wrappers of db/queries.py.

The store URL comes from `-- --db URL` after the script (streamlit run dashboard/app.py -- --db URL), else
DEVCOMPARE_DB_URL (what `runner dashboard --db URL` sets), else the default SQLite file. Query results are cached
for TTL_S seconds, keyed by their arguments; the Refresh button in the sidebar drops them.
"""
from __future__ import annotations

import argparse
import sys

import streamlit as st

from db import overview as overview_module
from db import queries
from db import report as report_module
from db.alerts import listing
from db.engine import display_url, open_store, resolve_url, session_scope

TTL_S = 30  # a new push shows up within this many seconds without pressing Refresh


def store_url() -> str:
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--db")
    args, _unknown = parser.parse_known_args(sys.argv[1:])
    return resolve_url(args.db)


def shown_url(url: str) -> str:
    return display_url(url)


@st.cache_resource(show_spinner=False)
def engine(url: str):
    """Opened once per URL and process; a store that is behind or unreachable raises StoreError (never cached)."""
    return open_store(url)


def _read(url: str, query, *args, **kwargs):
    with session_scope(engine(url)) as session:
        return query(session, *args, **kwargs)


def clear() -> None:
    st.cache_data.clear()
    engine.clear()  # and the engine: a SQLite file replaced under a running dashboard is opened anew


@st.cache_data(ttl=TTL_S, show_spinner=False)
def jobs(url: str) -> list[dict]:
    return _read(url, queries.jobs)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def comparison(url: str, fingerprint: str, candidate: str, baseline: str) -> dict:
    return _read(url, queries.comparison, fingerprint, candidate, baseline)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def batch_sizes(url: str, fingerprint: str) -> list[int]:
    return _read(url, queries.batch_sizes, fingerprint)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def trend(url: str, fingerprint: str, candidate: str, baseline: str, metric: str, batch_size: int | None) -> dict:
    return _read(url, queries.trend, fingerprint, candidate, baseline, metric, batch_size)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def alert_markers(url: str, fingerprint: str, metric: str, candidate: str, baseline: str,
                  batch_size: int | None) -> list[dict]:
    return _read(url, listing.alert_markers, fingerprint, metric, candidate, baseline, batch_size)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def job_runs(url: str, fingerprint: str, device: str) -> list[dict]:
    return _read(url, queries.job_runs, fingerprint, device)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def problem_diff(url: str, candidate_run: str, baseline_run: str) -> list[dict]:
    return _read(url, queries.problem_diff, candidate_run, baseline_run)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def accuracy_test(url: str, candidate_run: dict | None, baseline_run: dict | None, candidate: str, baseline: str):
    return _read(url, queries.accuracy_test, candidate_run, baseline_run, candidate, baseline)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def run_list(url: str, devices: tuple[str, ...], fingerprint: str | None, source: str | None,
             id_prefix: str | None, limit: int) -> tuple[int, list[dict]]:
    return _read(url, queries.run_list, list(devices), fingerprint, source, id_prefix, limit)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def run_detail(url: str, run_id: str) -> dict | None:
    return _read(url, queries.run_detail, run_id)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def alerts(url: str) -> list[dict] | None:
    return _read(url, listing.alerts)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def report(url: str, fingerprint: str, candidate: str, baseline: str, lang: str, fmt: str) -> str:
    """The README section `runner report` prints."""
    return report_module.render(_read(url, report_module.build, fingerprint, candidate, baseline), lang, fmt)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def overview(url: str) -> list[dict]:
    """A row per job and device pair (db/overview.py); ages are as of the query, at most TTL_S seconds ago."""
    return _read(url, overview_module.overview)
