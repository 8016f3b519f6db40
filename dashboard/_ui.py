"""Pieces every page shares: the store guard (errors and empty states that say what to run), job and device-pair
pickers that follow the user from page to page, and HTML tables.

Tables that people read and copy are `st.table` (static HTML): `st.dataframe` draws on a canvas that headless
Chromium shows blank. Long, sortable lists may still use `st.dataframe`. `st.table` reads every cell as Markdown, so
`table` and `records` escape what they are given; text from the store shown with `st.markdown` goes through `md`.
"""
from __future__ import annotations

import contextlib
import re

import pandas as pd
import streamlit as st
from sqlalchemy.exc import SQLAlchemyError

from core.errors import StoreError, UserError
from core.metrics import format_value as fmt
from core.rules import DEFAULT_PAIR
from dashboard import _data as data
from dashboard import _format
from db.engine import SchemaMismatch
from db.report import md_escape as md

when = _format.when
# a cell that reads as a number (a sign, digits, a unit after it) or as an absent one: right-aligned
NUMERIC = re.compile(r"[+-]?[\d,]*\.?\d+(e[+-]?\d+)?%?( \S+)?|missing|n/a|unknown|")


@contextlib.contextmanager
def store_errors(url: str):
    """Store problems become one message with the command that fixes them, never a traceback."""
    try:
        yield
    except SchemaMismatch as e:
        shown = data.shown_url(url)
        if e.newer:
            st.error(f"{md(e)}. Then restart the dashboard.", icon=":material/update:")
        else:  # on a web page the password stays masked: the reader puts it back in
            secret = " with the store's password in place of `***`" if "***" in shown else ""
            st.error(f"The store `{shown}` has schema revision {e.current or 'none'}; this code expects {e.head}. "
                     f"Back up the database, run `runner db upgrade --db '{shown}'`{secret} on a host with this "
                     "code, then reload this page.", icon=":material/upgrade:")
    except StoreError as e:
        st.error(f"{md(e)}. Start the database server or point the dashboard at a reachable store: "
                 f"`runner dashboard --db URL` (now: `{data.shown_url(url)}`).", icon=":material/cloud_off:")
    except SQLAlchemyError as e:  # outside a session scope (an engine-level failure): same one line, with a check
        reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        st.error(f"store {data.shown_url(url)}: {md(reason)}. Check it with `runner db current --db URL`.",
                 icon=":material/error:")
    except UserError as e:
        st.warning(md(e))


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
    """Name · model (without its organisation) · fingerprint · devices: short enough to show whole in the picker."""
    return (f"{job['job_name']} · {job['model_name'].rsplit('/', 1)[-1]} · {job['fingerprint']} · "
            f"{', '.join(sorted(job['devices']))}")


def follow_link() -> None:
    """A link from the Overview (?job=FP&candidate=D&baseline=D[&metric=M]) sets the page's choices, once: the
    parameters are then dropped, so the pickers are the user's again."""
    q = st.query_params.to_dict()
    if "job" not in q:
        return
    st.session_state.update({f"keep_{k}": q[k] for k in ("job", "candidate", "baseline", "metric") if k in q},
                            pair_of_job=q["job"])
    for key in ("job", "candidate", "baseline", "metric", "batch_size", "metric_for"):
        st.session_state.pop(key, None)
    if "metric" in q:
        st.session_state["metric_for"] = (q["job"], q.get("candidate"), q.get("baseline"))  # the link's metric wins
    st.query_params.clear()


def link(page: str, fingerprint: str, candidate: str, baseline: str, metric: str | None = None) -> str:
    """The URL path of a page with this job and pair chosen (relative: it works behind any prefix)."""
    from urllib.parse import urlencode

    q = {"job": fingerprint, "candidate": candidate, "baseline": baseline} | ({"metric": metric} if metric else {})
    return f"{page}?{urlencode(q)}"


def pick_job(jobs: list[dict], container=None) -> dict:
    """Job by name and fingerprint; defaults to the newest job that has runs on the default pair."""
    follow_link()
    by_fp = {j["fingerprint"]: j for j in jobs}
    shared = next((j["fingerprint"] for j in jobs if all(d in j["devices"] for d in DEFAULT_PAIR)),
                  jobs[0]["fingerprint"])
    with container if container is not None else contextlib.nullcontext():
        fp = _remembered_select("Job", list(by_fp), "job", default=shared, format_func=lambda f: job_label(by_fp[f]),
                                help="Name · model · fingerprint · devices it ran on. Runs are compared only "
                                     "within one fingerprint (one job spec).")
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
    defaults = default_pair(job["devices"])
    if st.session_state.get("pair_of_job") != job["fingerprint"]:
        # another job: a device remembered from the last one that never ran this one gives way to the default
        for key, default in zip(("candidate", "baseline"), defaults):
            if st.session_state.get(f"keep_{key}") not in job["devices"]:
                st.session_state[f"keep_{key}"] = default
                st.session_state.pop(key, None)  # the widget then starts from the remembered choice
        st.session_state["pair_of_job"] = job["fingerprint"]
    left, right = columns or st.columns(2)
    with left:
        cand = _remembered_select("Candidate (numerator)", options, "candidate", default=defaults[0])
    with right:
        base = _remembered_select("Baseline (denominator)", options, "baseline", default=defaults[1])
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
    top = st.columns([4, 1, 1])
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
    st.warning(f"Job **{md(job['job_name'])}** (fingerprint `{job['fingerprint']}`) has runs on {md(have)} only, "
               f"none on {md(' or '.join(lacking))}: a comparison needs both devices. On a {md(lacking[0])} host run "
               f"`runner submit --device {lacking[0]} --job JOB.toml --db '{db}'` with the job spec whose fingerprint "
               f"is `{job['fingerprint']}` (`runner fingerprint JOB.toml`), or push its run document: "
               f"`runner push RUN.json --db '{db}'`.", icon=":material/devices:")
    return True


def table(rows: list[list[str]]) -> None:
    """Rows of strings, header first, as a static HTML table: cells literal (escaped), number columns right-aligned."""
    frame = pd.DataFrame([[md(c) for c in r] for r in rows[1:]], columns=[md(c) for c in rows[0]])
    numbers = [c for i, c in enumerate(frame.columns)
               if i > 0 and len(frame) and all(NUMERIC.fullmatch(str(v).replace("\\", "")) for v in frame[c])]
    styled = frame.style.set_properties(subset=numbers, **{"text-align": "right !important"}) if numbers else frame
    st.table(styled, hide_index=True, width="content")


def records(rows: list[dict], columns: dict[str, str]) -> None:
    """Dicts as a static HTML table: `columns` maps keys to headers; values as people read them."""
    table([list(columns.values())] + [[cell(r.get(k)) for k in columns] for r in rows])


def cell(value) -> str:
    return _format.plain(value) if not isinstance(value, float) else fmt(value)


def short(run_id: str | None) -> str:
    return run_id[:8] if run_id else "none"


def sidebar(url: str) -> None:
    with st.sidebar:
        st.caption(f"Store: `{data.shown_url(url)}`")
        if st.button("Refresh", help=f"Reload from the store now (otherwise every {data.TTL_S} s)",
                     icon=":material/refresh:"):
            data.clear()
