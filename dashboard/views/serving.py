"""Serving: an engine measured through its OpenAI-compatible endpoint (runner submit --endpoint / runner serve) on two
devices: the latency-throughput curve of each device's latest run (one point per concurrency level or request rate),
and the per-level table (median and p99 latencies, throughputs, goodput, failures; ratio = candidate / baseline).
"""
import altair as alt
import pandas as pd
import streamlit as st

from core.metrics import METRICS, titled
from dashboard import _charts as charts
from dashboard import _data as data
from dashboard import _ui as ui
from db import serving
from db.engine import session_scope

st.title("Serving")
url = data.store_url()
LATENCIES = ("serving_ttft_ms", "serving_tpot_ms", "serving_itl_ms", "serving_e2e_ms")


@st.cache_data(ttl=data.TTL_S, show_spinner=False)
def serving_jobs(url: str) -> list[str]:
    with session_scope(data.engine(url)) as session:
        return [fp for fp, _name in serving.jobs(session)]


@st.cache_data(ttl=data.TTL_S, show_spinner=False)
def serving_view(url: str, fingerprint: str, candidate: str, baseline: str) -> dict | None:
    with session_scope(data.engine(url)) as session:
        return serving.view(session, fingerprint, candidate, baseline)


def curve(points: list[dict], latency: str, candidate: str, baseline: str) -> None:
    frame = pd.DataFrame(points)
    y_title = titled(METRICS[latency]) + ", median"
    x = alt.X("output_throughput:Q", title=titled(METRICS["output_throughput"]))
    color = alt.Color("device:N", scale=alt.Scale(domain=[candidate, baseline], range=list(charts.DEVICE_COLORS)))
    base = alt.Chart(frame).encode(x=x, y=alt.Y(f"{latency}:Q", title=y_title), color=color,
                                   detail="mode:N", order="level:Q",
                                   tooltip=["device", "label", alt.Tooltip(latency, format=".4g", title=y_title),
                                            alt.Tooltip("output_throughput", format=".4g", title="tokens/s"),
                                            alt.Tooltip("request_throughput", format=".4g", title="requests/s")])
    chart = base.mark_line(point=True) + base.mark_text(dy=-10, fontSize=11).encode(text="label:N")
    st.altair_chart(chart.properties(height=360), width="stretch")


with ui.store_errors(url):
    jobs = ui.require_runs(url)
    with_serving = set(serving_jobs(url))
    jobs = [j for j in jobs if j["fingerprint"] in with_serving]
    if not jobs:
        st.info("No serving runs yet. Measure an engine through its OpenAI-compatible endpoint: "
                "`runner serve --device cpu --job jobs/serving-demo.toml` starts one here, or "
                "`runner submit --device A100 --job JOB.toml --endpoint http://127.0.0.1:8000` measures a running one.")
        st.stop()
    top = st.columns([4, 1, 1])
    job = ui.pick_job(jobs, top[0])
    candidate, baseline = ui.pick_pair(job, top[1:])
    ui.check_pair(url, job, candidate, baseline)
    view = serving_view(url, job["fingerprint"], candidate, baseline)
    if view is None:
        st.info(f"Neither {candidate}'s nor {baseline}'s latest run of this job has serving levels.")
        st.stop()
    st.markdown(" · ".join(f"**{ui.md(d)}**: {ui.md(view['engines'][d])}, run `{view['runs'][d] or 'none'}`"
                           for d in (candidate, baseline)))
    latency = st.radio("Latency", LATENCIES, horizontal=True, format_func=lambda m: METRICS[m].label)
    curve(view["points"], latency, candidate, baseline)
    st.caption("One point per concurrency level or request rate: further right is more throughput, lower is less "
               "latency. Each device's latest run of this job.")
    st.subheader("Per level")
    ui.table(view["rows"])
    st.caption(f"ratio = {candidate} / {baseline} of the medians: above 1 means {candidate} is higher (slower, for "
               "latencies and failures).")
    st.download_button("Download CSV", view["csv"], file_name=f"serving-{job['fingerprint']}.csv", mime="text/csv")
    if view["failures"]:
        st.subheader("Failed requests")
        ui.records(view["failures"], {"device": "device", "level": "level", "reason": "reason", "count": "count",
                                      "example": "first message"})
