"""Runs: the store's runs, filtered by device, job, source and id; one run in detail with its environment, job spec
and every record (perf per batch size, accuracy, each problem's completion and verdict).
"""
import pandas as pd
import streamlit as st

from dashboard import _data as data
from dashboard import _ui as ui

st.title("Runs")
url = data.store_url()
LIMIT = 200  # newest matching runs listed; filters narrow the rest
PERF_HIDDEN = ("id", "run_id", "batch_size", "raw")


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
    frame["device_name"] = frame["device_name"].fillna("not recorded")  # imported reports name no device model
    st.dataframe(frame, hide_index=True, width="stretch", column_config={
        "id": st.column_config.TextColumn("run"),
        "finished_at": st.column_config.DatetimeColumn("finished (UTC)", format="YYYY-MM-DD HH:mm"),
        "device_class": "device", "device_name": "detected as", "job_name": "job", "model_name": "model",
        "fingerprint": "fingerprint", "source": "source",
        "passed": st.column_config.NumberColumn("passed", format="%d"),
        "problems": st.column_config.NumberColumn("problems", format="%d"),
        "pass_at_1": st.column_config.ProgressColumn("pass@1", min_value=0.0, max_value=1.0, format="%.4f"),
    })
    return rows


def key_values(pairs: list[tuple[str, object]]) -> None:
    ui.table([["field", "value"]] + [[k, "not recorded" if v is None else ui.cell(v)] for k, v in pairs])


def detail(run: dict) -> None:
    imported = f", imported from _{run['imported_from']}_" if run["source"] == "imported" else ""
    st.markdown(f"**{run['device_class']}** run `{run['id']}` of **{run['job_name']}** (`{run['model_name']}`, "
                f"fingerprint `{run['fingerprint']}`): {run['source']}{imported}")
    key_values([("device", run["device_class"]), ("detected as", run["device_name"]),
                ("devices used", run["device_count"]), ("dtype", run["dtype"]),
                ("tensor parallel", run["tensor_parallel"]), ("started", run["started_at"]),
                ("finished", run["finished_at"]), ("pushed", run["pushed_at"]),
                ("not in the source", ", ".join(run["missing"] or []) or "nothing")])

    st.subheader("Environment")
    env = run["environment"] or {}
    if env:
        key_values([(k, ", ".join(f"{a}={b}" for a, b in sorted(v.items())) if isinstance(v, dict) else v)
                    for k, v in env.items()])
    else:
        st.info("No environment recorded (an imported report does not give one).")
    with st.expander("Job spec"):
        st.json(run["spec"])

    st.subheader("Perf records")
    if run["perf"]:
        fields = [k for k in run["perf"][0] if k not in PERF_HIDDEN]
        ui.table([["field"] + [f"batch {p['batch_size']}" for p in run["perf"]]] +
                 [[k] + ["missing" if p[k] is None else ui.cell(p[k]) for p in run["perf"]] for k in fields])
        with st.expander("Raw timing repeats"):
            st.json({f"batch {p['batch_size']}": p["raw"] for p in run["perf"]})
    else:
        st.info("No perf records.")

    st.subheader("Accuracy")
    acc = run["accuracy"]
    if acc:
        key_values([(k, v) for k, v in acc.items() if k != "run_id"])
    else:
        st.info("No HumanEval record.")
    if run["problems"]:
        frame = pd.DataFrame(run["problems"]).drop(columns=["id", "run_id"])
        st.dataframe(frame, hide_index=True, width="stretch", column_config={
            "task_id": "problem", "passed": st.column_config.CheckboxColumn("passed"),
            "generated_tokens": st.column_config.NumberColumn("tokens", format="%d"),
            "generation_s": st.column_config.NumberColumn("generation", format="%.2f s"),
            "exec_s": st.column_config.NumberColumn("execution", format="%.3f s"),
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
                                                    f"{ui.when(by_id[i]['finished_at'])}")
        run = data.run_detail(url, run_id)
        if run is None:
            st.warning(f"Run {run_id} is no longer in the store.")
        else:
            detail(run)
