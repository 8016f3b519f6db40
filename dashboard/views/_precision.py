"""The Compare page's per-layer precision: each watched layer's estimated relative error between the candidate's and
the baseline's runs against its depth, the threshold, and the first layer at or over it (db.compare.precision_between,
estimated from the runs' stored sketches; core.precision says how)."""
from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from core.precision import DEFAULT_THRESHOLD
from dashboard import _data as data
from db.compare import precision_between
from db.engine import session_scope

THRESHOLDS = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
FLOOR = 1e-9  # where a log axis draws an error of exactly zero (identical outputs)


@st.cache_data(ttl=data.TTL_S, show_spinner=False)
def comparison(url: str, candidate_run: str | None, baseline_run: str | None, threshold: float) -> dict | None:
    with session_scope(data.engine(url)) as session:
        return precision_between(session, candidate_run, baseline_run, threshold)


def chart(p: dict) -> alt.LayerChart:
    """Relative error (log scale) per layer in depth order, the threshold as a rule, the first layer over it marked."""
    rows = [{"layer": r["layer"], "error": max(r["rel_error"], FLOOR), "exact": f"{r['rel_error']:.3e}",
             "cosine": "n/a" if r["cosine"] is None else f"{r['cosine']:.7f}", "first": r["layer"] == p["first_over"]}
            for r in p["layers"] if r["rel_error"] is not None]
    frame = pd.DataFrame(rows)
    x = alt.X("layer:N", sort=[r["layer"] for r in rows], title="layer (depth order)", axis=alt.Axis(labelAngle=-60))
    y = alt.Y("error:Q", scale=alt.Scale(type="log"), title="relative error (estimated)", axis=alt.Axis(format=".0e"))
    tooltip = [alt.Tooltip("layer:N"), alt.Tooltip("exact:N", title="relative error"), alt.Tooltip("cosine:N")]
    line = alt.Chart(frame).mark_line(point=True).encode(x=x, y=y, tooltip=tooltip)
    first = alt.Chart(frame[frame["first"]]).mark_point(size=160, color="#ff4b4b", filled=True).encode(
        x=x, y=y, tooltip=tooltip)
    rule = alt.Chart(pd.DataFrame([{"threshold": p["threshold"]}])).mark_rule(color="#ff4b4b", strokeDash=[6, 3]) \
        .encode(y="threshold:Q")
    return alt.layer(line, first, rule).properties(height=280)


def _e(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2e}"


def section(url: str, view: dict) -> None:
    """The Compare page's precision section for the view's two runs."""
    st.subheader("Per-layer precision")
    ids = [view["runs"][side]["id"] if view["runs"][side] else None for side in ("candidate", "baseline")]
    threshold = st.select_slider("Threshold (relative error)", THRESHOLDS, value=DEFAULT_THRESHOLD,
                                 format_func=lambda t: f"{t:g}", key="precision_threshold")
    p = comparison(url, *ids, threshold)
    if p is None:
        st.markdown("Per-layer precision: **not available** (both runs need a precision pass: a job with a "
                    "[precision] section, run by `runner submit`; imported runs have none).")
        return
    if "unavailable" in p:
        st.markdown(f"Per-layer precision: **not comparable**: {p['unavailable']}.")
        return
    candidate, baseline = view["candidate"], view["baseline"]
    first = (f"first layer at or over {threshold:g}: **{p['first_over']}**" if p["first_over"] else
             f"no layer reaches {threshold:g}")
    st.markdown(f"Relative error = norm({candidate} - {baseline}) / norm({baseline}) of each layer's output on "
                f"{len(p['tasks'])} fixed prompts, estimated from the runs' sketches: {first}.")
    nonfinite = [r["layer"] for r in p["layers"] if any(r["nonfinite"])]
    if nonfinite:
        st.warning(f"NaN or Inf in the output of {', '.join(nonfinite)} (not drawn).")
    if len(nonfinite) < len(p["layers"]):
        st.altair_chart(chart(p), width="stretch")
        if any(r["rel_error"] == 0 for r in p["layers"]):
            st.caption(f"Layers with identical outputs (error 0) are drawn at {FLOOR:g}, the log axis having no 0.")
    lg = p["logits"]
    if lg and lg["positions"]:
        st.markdown(f"Logits over {lg['positions']} prompt positions: top-1 agreement **{lg['top1_agreement']:.2%}**, "
                    f"KL({baseline} ‖ {candidate}) mean {_e(lg['kl_mean'])}, max {_e(lg['kl_max'])}.")
