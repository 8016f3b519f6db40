"""Trends: one metric of one job over time, each device's value and the ratio (candidate / baseline), with alert
markers where regression detection raised one; filters by job, device pair, metric and batch size.
"""
import altair as alt
import pandas as pd
import streamlit as st

from dashboard import _data as data
from dashboard import _ui as ui
from core.metrics import HEADLINE, METRICS, titled
from core.metrics import format_value as fmt

st.title("Trends")
url = data.store_url()
Y_AXIS_PX = 50  # both charts reserve the same room for their y axis, so their time axes line up


def _frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    frame["at"] = pd.to_datetime(frame["at"], utc=True)  # SQLite gives naive UTC, PostgreSQL aware
    return frame


def charts(series: dict, markers: list[dict], metric_label: str, candidate: str, baseline: str) -> None:
    values = _frame(series["values"])
    # one time axis for both charts, so a ratio step lines up with the device that moved
    x = alt.X("at:T", title="finished (UTC)", scale=alt.Scale(domain=[values["at"].min().isoformat(),
                                                                      values["at"].max().isoformat()]))
    rule = None
    if markers:
        rule = alt.Chart(_frame(markers)).mark_rule(color="#d62728", strokeDash=[4, 3], size=2).encode(
            x=x, tooltip=["state", "label", "at:T"])
    per_device = alt.Chart(values).mark_line(point=True).encode(
        x=x, y=alt.Y("value:Q", title=metric_label, axis=alt.Axis(minExtent=Y_AXIS_PX)),
        color=alt.Color("device:N", title="device", legend=alt.Legend(orient="top")),
        tooltip=["device", "at:T", alt.Tooltip("value:Q", format=".4g"), "run_id", "source"])
    layers = [per_device] + ([rule] if rule is not None else [])
    st.altair_chart(alt.layer(*layers).properties(height=260, title=f"{metric_label} per device"), width="stretch")
    if series["ratios"]:
        ratio = alt.Chart(_frame(series["ratios"])).mark_line(point=True, color="#444").encode(
            x=x, y=alt.Y("ratio:Q", title=f"{candidate} / {baseline}", scale=alt.Scale(zero=False),
                         axis=alt.Axis(format=".4", minExtent=Y_AXIS_PX)),
            tooltip=["at:T", alt.Tooltip("ratio:Q", format=".4f"), "candidate_run", "baseline_run"])
        layers = [ratio] + ([rule] if rule is not None else [])
        st.altair_chart(alt.layer(*layers).properties(height=200, title=f"ratio {candidate} / {baseline}"),
                        width="stretch")


with ui.store_errors(url):
    jobs = ui.require_runs(url)
    job = ui.pick_job(jobs)
    row = st.columns(4)
    candidate, baseline = ui.pick_pair(job, row[:2])
    with row[2]:
        metric = st.selectbox("Metric", [m.name for m in HEADLINE], format_func=lambda m: titled(METRICS[m]),
                              key="metric")
    batch_size = None
    if METRICS[metric].source == "perf":
        sizes = data.batch_sizes(url, job["fingerprint"])
        with row[3]:
            batch_size = st.selectbox("Batch size", sizes, key="batch_size") if sizes else None
    ui.check_pair(url, job, candidate, baseline)
    series = data.trend(url, job["fingerprint"], candidate, baseline, metric, batch_size)
    markers = data.alert_markers(url, job["fingerprint"], metric, candidate, baseline, batch_size)
    label = titled(METRICS[metric])
    if not series["values"]:
        st.info(f"No run of this job on {candidate} or {baseline} recorded {label}"
                f"{'' if batch_size is None else f' at batch size {batch_size}'}.")
        st.stop()

    kind = METRICS[metric].kind
    cols = st.columns(3)
    ratios = series["ratios"]
    if ratios:
        last = ratios[-1]
        prev = ratios[-2]["ratio"] if len(ratios) > 1 else None
        delta = (f"{last['ratio'] / prev - 1:+.1%} vs previous" if last["ratio"] is not None and prev else None)
        cols[0].metric(f"latest ratio {candidate} / {baseline}", fmt(last["ratio"], "ratio"), delta=delta)
        cols[1].metric(f"latest {candidate}", fmt(last["candidate"], kind))
        cols[2].metric(f"latest {baseline}", fmt(last["baseline"], kind))
    else:
        cols[0].metric(f"latest ratio {candidate} / {baseline}", "n/a")
    charts(series, markers, label, candidate, baseline)
    if markers:
        st.caption(f"{len(markers)} alert(s) on this series: dashed red lines; details on the Alerts page.")
    else:
        st.caption("No alerts on this series.")

    st.subheader("Ratio points")
    if ratios:
        ui.records([{**r, "ratio": fmt(r["ratio"], "ratio"), "candidate": fmt(r["candidate"], kind),
                     "baseline": fmt(r["baseline"], kind)} for r in reversed(ratios[-50:])], {
            "at": "when (UTC)", "ratio": "ratio", "candidate": candidate, "baseline": baseline,
            "candidate_run": f"{candidate} run", "baseline_run": f"{baseline} run"})
        st.caption("Each point pairs the newest run of each device at that moment; newest first, at most 50.")
    else:
        st.info(f"No ratio yet: the job needs a run on both {candidate} and {baseline} with {label}.")
