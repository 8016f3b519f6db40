"""Pieces every page shares: the store guard (errors and empty states that say what to run), job and device-pair
pickers that follow the user from page to page, and HTML tables.

Tables that people read and copy are `st.table` (static HTML): `st.dataframe` draws on a canvas that headless
Chromium shows blank. Long, sortable lists may still use `st.dataframe`.
"""
from __future__ import annotations

import contextlib
import datetime as dt

import pandas as pd
import streamlit as st
from sqlalchemy.exc import SQLAlchemyError

from dashboard import _data as data
from core.metrics import format_value as fmt
from core.rules import DEFAULT_PAIR
from db.models import utc
from core.errors import StoreError, UserError



@contextlib.contextmanager
def store_errors(url: str):
    """Store problems become one message with the command that fixes them, never a traceback."""
    try:
        yield
    except StoreError as e:
        msg = str(e)
        if "runner db upgrade" in msg:
            st.error(f"{msg}. Then reload this page.", icon=":material/upgrade:")
        else:
            st.error(f"{msg}. Start the database server or point the dashboard at a reachable store: "
                     f"`runner dashboard --db URL` (now: `{data.shown_url(url)}`).", icon=":material/cloud_off:")
    except SQLAlchemyError as e:  # outside a session scope (an engine-level failure): same one line, with a check
        reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        st.error(f"store {data.shown_url(url)}: {reason}. Check it with `runner db current --db URL`.",
                 icon=":material/error:")
    except UserError as e:
        st.warning(str(e))


def require_runs(url: str) -> list[dict]:
    """The store's jobs; an empty store shows how to fill it and stops the page."""
    data.engine(url)  # behind, ahead or unreachable: StoreError before any query
    jobs = data.jobs(url)
    if not jobs:
        db = data.shown_url(url)
        st.info(f"The store `{db}` has no runs yet. Push the published reference report (910B3 and A100):\n\n"
                f"`runner push examples/reference-910B3.json examples/reference-A100.json --db '{db}'`\n\n"
                f"or measure a run on this host: `runner submit --device cpu --job jobs/demo-cpu.toml --db '{db}'`",
                icon=":material/inbox:")
        st.stop()
    return jobs


def _remembered_select(label: str, options: list, key: str, default=None, **kwargs):
    """A selectbox whose choice follows the user to other pages (widget state itself lives only on one page)."""
    keep = f"keep_{key}"
    wanted = st.session_state.get(keep, default)
    index = options.index(wanted) if wanted in options else 0
    value = st.selectbox(label, options, index=index, key=key, **kwargs)
    st.session_state[keep] = value
    return value


def job_label(job: dict) -> str:
    devices = ", ".join(f"{d} x{n}" for d, n in sorted(job["devices"].items()))
    return f"{job['job_name']} · {job['model_name']} · {job['fingerprint']} ({devices})"


def pick_job(jobs: list[dict], container=None) -> dict:
    """Job by name and fingerprint; defaults to the newest job that has runs on the default pair."""
    by_fp = {j["fingerprint"]: j for j in jobs}
    shared = next((j["fingerprint"] for j in jobs if all(d in j["devices"] for d in DEFAULT_PAIR)),
                  jobs[0]["fingerprint"])
    with container if container is not None else contextlib.nullcontext():
        fp = _remembered_select("Job (name · model · fingerprint)", list(by_fp), "job", default=shared,
                                format_func=lambda f: job_label(by_fp[f]))
    return by_fp[fp]


def default_pair(devices: dict[str, int]) -> tuple[str, str]:
    """910B3 vs A100 where the job ran there; otherwise the job's own devices, most runs first, against A100."""
    cand, base = DEFAULT_PAIR
    ran = sorted(devices, key=lambda d: (-devices[d], d))
    if cand not in devices:
        cand = next((d for d in ran if d != base), cand)
    if base not in devices:
        base = next((d for d in ran if d != cand), base)
    return cand, base


def pick_pair(job: dict, columns=None) -> tuple[str, str]:
    """(candidate, baseline): any two device classes, default 910B3 vs A100; ratio = candidate / baseline."""
    options = sorted(set(job["devices"]) | set(DEFAULT_PAIR))
    cand_default, base_default = default_pair(job["devices"])
    left, right = columns or st.columns(2)
    with left:
        cand = _remembered_select("Candidate (numerator)", options, "candidate", default=cand_default)
    with right:
        base = _remembered_select("Baseline (denominator)", options, "baseline", default=base_default)
    return cand, base


def check_pair(url: str, job: dict, candidate: str, baseline: str) -> None:
    """Stop the page on a pair of one device with itself; warn when a side has no run of this job."""
    if candidate == baseline:
        st.warning("Pick two different device classes: the ratio is candidate / baseline.")
        st.stop()
    single_device_warning(url, job, candidate, baseline)


def pick_job_and_pair(url: str) -> tuple[dict, str, str]:
    """The page header of Compare and Problems: job, candidate and baseline in one row, checked."""
    jobs = require_runs(url)
    top = st.columns([3, 1, 1])
    job = pick_job(jobs, top[0])
    candidate, baseline = pick_pair(job, top[1:])
    check_pair(url, job, candidate, baseline)
    return job, candidate, baseline


def single_device_warning(url: str, job: dict, candidate: str, baseline: str) -> bool:
    """Warn when a side of the pair has no run of this job; True if the comparison is one-sided."""
    lacking = [d for d in (candidate, baseline) if d not in job["devices"]]
    if not lacking:
        return False
    db = data.shown_url(url)
    have = ", ".join(sorted(job["devices"]))
    st.warning(f"Job **{job['job_name']}** (fingerprint `{job['fingerprint']}`) has runs on {have} only, none on "
               f"{' or '.join(lacking)}: a comparison needs both devices. On a {lacking[0]} host run "
               f"`runner submit --device {lacking[0]} --job JOB.toml --db '{db}'` with the job spec whose fingerprint "
               f"is `{job['fingerprint']}` (`runner fingerprint JOB.toml`), or push its run document: "
               f"`runner push RUN.json --db '{db}'`.", icon=":material/devices:")
    return True


def table(rows: list[list[str]]) -> None:
    """Rows of strings, header first, as a static HTML table."""
    st.table(pd.DataFrame(rows[1:], columns=rows[0]), hide_index=True, width="content")


def records(rows: list[dict], columns: dict[str, str]) -> None:
    """Dicts as a static HTML table: `columns` maps keys to headers; None prints as 'missing'."""
    st.table(pd.DataFrame([[cell(r.get(k)) for k in columns] for r in rows], columns=list(columns.values())),
             hide_index=True, width="content")


def cell(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return fmt(value)
    if isinstance(value, dt.datetime):
        return when(value)
    return fmt(value) if value is None else str(value)


def short(run_id: str | None) -> str:
    return run_id[:8] if run_id else "none"


def when(t) -> str:
    if t is None:
        return "unknown"
    return f"{utc(t):%Y-%m-%d %H:%M} UTC"


def sidebar(url: str) -> None:
    with st.sidebar:
        st.caption(f"Store: `{data.shown_url(url)}`")
        if st.button("Refresh", help=f"Reload from the store now (otherwise every {data.TTL_S} s)",
                     icon=":material/refresh:"):
            data.clear()
