"""Alerts: regressions found by regression detection (db/alerts/), as open (suspected or active, not yet
acknowledged), acknowledged, resolved, and outliers (a single bad run that went back).
"""
import streamlit as st

from core.metrics import METRICS, titled
from dashboard import _data as data
from dashboard import _format
from dashboard import _ui as ui

st.title("Alerts")
url = data.store_url()
COLUMNS = {"id": "id", "at": "since (UTC)", "state": "state", "series": "metric", "pair": "pair",
           "fingerprint": "job", "ratio": "ratio", "baseline_ratio": "usual ratio", "change_pct": "change",
           "moved": "moved", "reason": "why"}
# what an empty tab says: what it means that nothing is there
EMPTY = {"Open": "No open alert: every judged series is within its limits.",
         "Acknowledged": "No acknowledged alert (`runner alerts ack ID` acknowledges an open one).",
         "Resolved": "No alert has been resolved yet.",
         "Outliers": "No outliers: no lone bad run that went back on its own."}


def group(alert: dict) -> str:
    if alert["state"] in ("suspected", "active"):
        return "Acknowledged" if alert["acknowledged"] else "Open"
    return {"resolved": "Resolved", "outlier": "Outliers"}.get(alert["state"], "Other")


def shown(alert: dict, job_names: dict[str, str]) -> dict:
    metric = titled(METRICS[alert["metric"]]) if alert["metric"] in METRICS else alert["metric"]
    return {**alert, "series": metric if alert["batch_size"] is None else f"{metric}, batch {alert['batch_size']}",
            "pair": f"{alert['candidate_device']} / {alert['baseline_device']}",
            "fingerprint": job_names.get(alert["fingerprint"], alert["fingerprint"]),
            "ratio": ui.fmt(alert["ratio"], "ratio"), "baseline_ratio": ui.fmt(alert["baseline_ratio"], "ratio"),
            "change_pct": _format.change(alert["change_pct"]), "moved": alert["moved"] or _format.UNKNOWN}


with ui.store_errors(url):
    jobs = ui.require_runs(url)
    job_names = {j["fingerprint"]: f"{j['job_name']} ({j['fingerprint']})" for j in jobs}
    alerts = data.alerts(url)
    groups = {name: [] for name in ("Open", "Acknowledged", "Resolved", "Outliers")}
    for a in alerts:
        groups.setdefault(group(a), []).append(a)
    if not alerts:
        st.success("No alerts yet: no series has regressed (or detection has not run on this store: "
                   "`runner alerts check`).", icon=":material/check_circle:")
    else:
        n_open = len(groups["Open"])
        (st.error if n_open else st.success)(
            f"{n_open} open regression(s), {len(groups['Acknowledged'])} acknowledged, "
            f"{len(groups['Resolved'])} resolved.")
    tabs = st.tabs([f"{name} ({len(members)})" for name, members in groups.items()])
    for tab, (name, members) in zip(tabs, groups.items()):
        with tab:
            if members:
                ui.records([shown(a, job_names) for a in members], COLUMNS)
            else:
                st.caption(EMPTY.get(name, "Nothing here."))
    st.caption("Acknowledge or resolve with `runner alerts ack ID` / `runner alerts resolve ID`; an annotation "
               "(`runner alerts annotate RUN NOTE`) restarts a series' baseline after an intended change.")
