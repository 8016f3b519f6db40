"""Runs: the store's runs, filtered by device, job, source and id; one run in detail with its environment, job spec
and every record (perf per batch size, accuracy, each problem's completion and verdict).
"""
import pandas as pd
import streamlit as st

from dashboard import _data as data
from dashboard import _format
from dashboard import _ui as ui
from db import queries

st.title("Runs")
url = data.store_url()
LIMIT = 200  # newest matching runs listed; filters narrow the rest
PERF_HIDDEN = ("id", "run_id", "batch_size", "raw")
ACCURACY_HIDDEN = ("run_id",)


def run_list(jobs: list[dict]) -> list[dict]:
    devices = sorted({d for j in jobs for d in j["devices"]})
    by_fp = {j["fingerprint"]: j for j in jobs}
    cols = st.columns([2, 3, 1, 2])
    chosen = cols[0].multiselect("Devices", devices, key="devices", placeholder="all devices")
    fp = cols[1].selectbox("Job", [None, *by_fp], key="runs_job",
                           format_func=lambda f: "all jobs" if f is None else ui.job_label(by_fp[f]))
    source = cols[2].selectbox("Source", [None, "measured", "imported"], key="source",
                               format_func=lambda s: s or "all")
    prefix = cols[3].text_input("Run id starts with", key="id_prefix").strip() or None
    total, rows = data.run_list(url, tuple(chosen), fp, source, prefix, LIMIT)
    st.caption(f"{total} matching run(s){f', newest {LIMIT} shown' if total > LIMIT else ''}.")
    if not rows:
        st.info("No run matches these filters.")
        return []
    frame = pd.DataFrame(rows)
    frame["finished_at"] = pd.to_datetime(frame["finished_at"], utc=True)
    frame["id"] = frame["id"].str[:8]  # the full id is in the run detail below; the list fits the page without it
    # a run without HumanEval shows nothing there, not 0 / 0
    frame["passed"] = [f"{int(p):,} / {int(n):,}" if pd.notna(p) else "" for p, n in zip(frame["passed"],
                                                                                         frame["problems"])]
    st.dataframe(frame, hide_index=True, width="stretch", column_order=(
        "id", "finished_at", "device_class", "job_name", "fingerprint", "source", "passed", "pass_at_1"),
        column_config={
            "id": st.column_config.TextColumn("run", width="small"),
            "finished_at": st.column_config.DatetimeColumn("finished (UTC)", format="YYYY-MM-DD HH:mm"),
            "device_class": st.column_config.TextColumn("device", width="small"),
            "job_name": "job", "fingerprint": "fingerprint", "source": st.column_config.TextColumn("source",
                                                                                                  width="small"),
            "passed": st.column_config.TextColumn("passed", help="problems passed / problems"),
            "pass_at_1": st.column_config.ProgressColumn("pass@1", min_value=0.0, max_value=1.0, format="%.4f"),
        })
    return rows


def key_values(pairs: list[tuple[str, object]]) -> None:
    """(field, value) rows: values as people read them, absent ones as "not recorded"."""
    ui.table([["field", "value"]] + [[k, "not recorded" if v is None else v] for k, v in pairs])


def detail(run: dict) -> None:
    origin = (f"imported from “{ui.md(run['imported_from'])}”" if run["source"] == "imported" else
              "measured")
    st.markdown(f"**{ui.md(run['device_class'])}** run `{run['id']}` of **{ui.md(run['job_name'])}** "
                f"(`{run['model_name']}`, fingerprint `{run['fingerprint']}`): {origin}")
    missing = set(run["missing"] or [])
    times = [(name, "not in the source" if key in missing else ui.when(run[key]))
             for name, key in (("started", "started_at"), ("finished", "finished_at"))]
    key_values([("device", run["device_class"]), ("detected as", run["device_name"]),
                ("devices used", run["device_count"]), ("dtype", run["dtype"]),
                ("tensor parallel", run["tensor_parallel"]), *times, ("pushed", ui.when(run["pushed_at"])),
                ("not in the source", ", ".join(run["missing"] or []) or "nothing")])

    st.subheader("Environment")
    env = run["environment"] or {}
    if env:
        names = dict(queries.ENVIRONMENT_KEYS)
        key_values([(names.get(k) or _format.label(k), None if v is None else _format.field_value(k, v))
                    for k, v in env.items()])
    else:
        st.info("No environment recorded (an imported report does not give one).")
    with st.expander("Job spec"):
        st.json(run["spec"])

    st.subheader("Perf records")
    if run["perf"]:
        fields = [k for k in run["perf"][0] if k not in PERF_HIDDEN]
        ui.table([["field"] + [f"batch {p['batch_size']}" for p in run["perf"]]] +
                 [[_format.label(k)] + ["not recorded" if p[k] is None else _format.field_value(k, p[k])
                                        for p in run["perf"]] for k in fields])
        with st.expander("Raw timing repeats"):
            st.json({f"batch {p['batch_size']}": p["raw"] for p in run["perf"]})
    else:
        st.info("No perf records.")

    st.subheader("Accuracy")
    acc = run["accuracy"]
    if acc:
        key_values([(_format.label(k), None if v is None else _format.field_value(k, v))
                    for k, v in acc.items() if k not in ACCURACY_HIDDEN])
    else:
        st.info("No HumanEval record.")
    if run["problems"]:
        frame = pd.DataFrame(run["problems"]).drop(columns=["id", "run_id"])
        for timed in ("generation_s", "exec_s"):  # "unknown" where a run did not time it, not an empty "None"
            frame[timed] = [_format.field_value(timed, v) for v in frame[timed]]
        st.dataframe(frame, hide_index=True, width="stretch", column_config={
            "task_id": "problem", "passed": st.column_config.CheckboxColumn("passed"),
            "generated_tokens": st.column_config.NumberColumn("tokens", format="%d"),
            "generation_s": "generation", "exec_s": "execution",
        })
    elif acc:
        st.caption("No per-problem results stored with this run.")
    if run["token_probe"]:
        probe = run["token_probe"]
        st.caption(f"Token probe: {len(probe['tasks'])} prompts, "
                   f"{sum(len(t) for t in probe['tokens'])} greedy tokens.")


with ui.store_errors(url):
    jobs = ui.require_runs(url)
    rows = run_list(jobs)
    if rows:
        st.subheader("Run detail")
        by_id = {r["id"]: r for r in rows}
        run_id = st.selectbox("Run", list(by_id), key="run",
                              format_func=lambda i: f"{i} · {by_id[i]['device_class']} · {by_id[i]['job_name']} · "
                                                    f"{ui.when(by_id[i]['finished_at'])}",
                              help="The runs listed above, newest first; the list shows the first 8 characters of "
                                   "each id")
        run = data.run_detail(url, run_id)
        if run is None:
            st.warning(f"Run {run_id} is no longer in the store.")
        else:
            detail(run)
