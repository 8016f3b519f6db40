"""Trends: one metric of one job over time: each device's values (each on its own fitted scale) and the ratio
(candidate / baseline), with markers where regression detection raised an alert, by state. The metric shown first
is one with an open alert on this job and pair, if any.
"""
import streamlit as st

from core.metrics import HEADLINE, METRICS, titled
from core.metrics import format_value as fmt
from dashboard import _charts as charts
from dashboard import _data as data
from dashboard import _format
from dashboard import _ui as ui

st.title("Trends")
url = data.store_url()
OPEN = ("active", "suspected")  # the alert states still open, the more serious first


def open_alerts(alerts: list[dict], fingerprint: str, candidate: str, baseline: str) -> list[dict]:
    """The open alerts of this job and pair, the one to show first first: active before suspected, unacknowledged
    before acknowledged."""
    mine = [a for a in alerts if a["fingerprint"] == fingerprint and a["state"] in OPEN
            and {a["candidate_device"], a["baseline_device"]} == {candidate, baseline} and a["metric"] in METRICS]
    return sorted(mine, key=lambda a: (OPEN.index(a["state"]), a["acknowledged"]))


def pick_metric(alerts: list[dict], column, choice: tuple) -> str:
    """The metric picker; on a new job or pair it starts at the first open alert's metric (else pass@1)."""
    names = [m.name for m in HEADLINE]
    alert, alerted = (alerts[0] if alerts else None), {a["metric"] for a in alerts}
    if st.session_state.get("metric_for") != choice:  # a new job or pair (not a link naming its metric)
        st.session_state["metric_for"] = choice
        st.session_state.pop("metric", None)
        if alert is not None:
            st.session_state["keep_metric"] = alert["metric"]
            st.session_state.pop("batch_size", None)
    default = st.session_state.get("keep_metric", names[0])
    with column:
        metric = st.selectbox("Metric", names, index=names.index(default) if default in names else 0, key="metric",
                              format_func=lambda m: titled(METRICS[m]) + (" (open alert)" if m in alerted else ""))
    st.session_state["keep_metric"] = metric
    return metric


def summary(series: dict, candidate: str, baseline: str, kind: str, unit: str) -> None:
    cols = st.columns(3)
    ratios = series["ratios"]
    if not ratios:
        cols[0].metric(f"latest ratio {candidate} / {baseline}", "n/a")
        return
    last = ratios[-1]
    prev = ratios[-2]["ratio"] if len(ratios) > 1 else None
    delta = f"{last['ratio'] / prev - 1:+.1%} vs previous" if last["ratio"] is not None and prev else None
    cols[0].metric(f"latest ratio {candidate} / {baseline}", fmt(last["ratio"], "ratio"), delta=delta)
    for col, side, device in ((cols[1], "candidate", candidate), (cols[2], "baseline", baseline)):
        value = last[side]
        col.metric(f"latest {device}", fmt(value, kind) if kind != "value" else _format.with_unit(value, unit))


def points_table(ratios: list[dict], candidate: str, baseline: str, kind: str) -> None:
    if not ratios:
        return
    st.subheader("Ratio points")
    ui.records([{**r, "ratio": fmt(r["ratio"], "ratio"), "candidate": fmt(r["candidate"], kind),
                 "baseline": fmt(r["baseline"], kind), "candidate_run": ui.short(r["candidate_run"]),
                 "baseline_run": ui.short(r["baseline_run"])} for r in reversed(ratios[-50:])], {
        "at": "when (UTC)", "ratio": "ratio", "candidate": candidate, "baseline": baseline,
        "candidate_run": f"{candidate} run", "baseline_run": f"{baseline} run"})
    st.caption("Each point pairs the newest run of each device at that moment; newest first, at most 50. Full run "
               "ids: hover a chart's point, or the Runs page.")


with ui.store_errors(url):
    jobs = ui.require_runs(url)
    row = st.columns([4, 1, 1])
    job = ui.pick_job(jobs, row[0])
    candidate, baseline = ui.pick_pair(job, row[1:])
    alerts = open_alerts(data.alerts(url), job["fingerprint"], candidate, baseline)
    row = st.columns([2, 1, 3])
    metric = pick_metric(alerts, row[0], (job["fingerprint"], candidate, baseline))
    alert = next((a for a in alerts if a["metric"] == metric), None)  # this metric's, for its batch size below
    batch_size = None
    if METRICS[metric].source == "perf":
        sizes = data.batch_sizes(url, job["fingerprint"])
        wanted = alert["batch_size"] if alert is not None else None
        with row[1]:
            batch_size = st.selectbox("Batch size", sizes, key="batch_size",
                                      index=sizes.index(wanted) if wanted in sizes else 0) if sizes else None
    ui.check_pair(url, job, candidate, baseline)
    series = data.trend(url, job["fingerprint"], candidate, baseline, metric, batch_size)
    markers = data.alert_markers(url, job["fingerprint"], metric, candidate, baseline, batch_size)
    label, kind, unit = titled(METRICS[metric]), METRICS[metric].kind, METRICS[metric].unit
    if not series["values"]:
        st.info(f"No run of this job on {ui.md(candidate)} or {ui.md(baseline)} recorded {ui.md(label)}"
                f"{'' if batch_size is None else f' at batch size {batch_size}'}.")
        st.stop()
    alert = next((a for a in alerts if a["metric"] == metric and a["batch_size"] == batch_size), None)
    if alert is not None:
        st.warning(f"Open alert ({alert['state']}{', acknowledged' if alert['acknowledged'] else ''}) on this series: "
                   f"{ui.md(alert['reason'] or alert['state'])}. Details on the Alerts page.",
                   icon=":material/notifications_active:")
    summary(series, candidate, baseline, kind, unit)
    charts.trend(series, markers, label, candidate, baseline)
    if markers:
        st.caption(f"{len(markers)} alert(s) on this series: vertical lines where each opened, by state; details on "
                   "the Alerts page.")
    else:
        st.caption("No alerts on this series.")
    if not series["ratios"]:
        st.info(f"No ratio yet: the job needs a run on both {ui.md(candidate)} and {ui.md(baseline)} with "
                f"{ui.md(label)}.")
    points_table(series["ratios"], candidate, baseline, kind)
