"""Charts: a trend's panels (each device's values and the ratio over one time axis, alert markers by state) and the
Overview's sparklines.

Each panel's y axis is fitted to its own data, not drawn from zero: the 910B3's first-token speed (about 1.2 tokens/s)
and the A100's (about 18) would otherwise share one scale and the slower device would lie on the zero line. Panels
are separate Altair charts with the same x domain and y-axis width, so their time axes line up.
"""
from __future__ import annotations

import base64

import altair as alt
import pandas as pd
import streamlit as st

from db.report import md_escape

AXIS_PX = 64  # room every panel keeps for its y axis and labels, so the time axes line up
PANEL_PX = 170  # plot height of a device panel; the ratio panel gets a little more
# Streamlit fits a stretched chart's whole drawing (title and axes too) into its height: this much goes to them
DECORATION_PX = 48
DEVICE_COLORS = ("#4c78a8", "#f58518")  # candidate, baseline: as in the README section's charts
# alert states as the markers draw them: Streamlit's colour name (for the legend above the charts), its hex value,
# the dash, and a glyph of that dash
STATES = {"active": ("red", "#ff4b4b", [1, 0], "━━"), "suspected": ("orange", "#ffa421", [6, 3], "╍╍"),
          "resolved": ("green", "#21c354", [2, 3], "┈┈"), "outlier": ("gray", "#808495", [2, 3], "┈┈")}


def fitted(values: list[float]) -> list[float]:
    """A y domain around the data with some room (not from zero), wide enough to show several ticks even for a flat
    series."""
    lo, hi = min(values), max(values)
    pad = max((hi - lo) * 0.15, abs(hi) * 0.02, 1e-9)
    return [lo - pad, hi + pad]


def frame(rows: list[dict]) -> pd.DataFrame:
    out = pd.DataFrame(rows)
    out["at"] = pd.to_datetime(out["at"], utc=True)  # SQLite gives naive UTC, PostgreSQL aware
    return out


def _kind(state: str) -> str:
    """"active (acknowledged) (A100 vs 910B3)" -> "active": the state a marker is drawn as."""
    return state.split()[0] if state.split() and state.split()[0] in STATES else "outlier"


def legend(markers: list[dict]) -> str:
    """The markers' legend as Streamlit markdown (one legend for all panels, outside them: inside, it would take
    its room from the first panel's plot)."""
    kinds = [k for k in STATES if k in {_kind(m["state"]) for m in markers}]
    return "Alert markers: " + " · ".join(f":{STATES[k][0]}[{STATES[k][3]} {k}]" for k in kinds)


def _markers(markers: list[dict], x: alt.X) -> alt.Chart | None:
    """Vertical rules where alerts opened, coloured and dashed by state."""
    if not markers:
        return None
    rows = frame([{**m, "kind": _kind(m["state"])} for m in markers])
    kinds = [k for k in STATES if k in set(rows["kind"])]
    return alt.Chart(rows).mark_rule(size=2).encode(
        x=x, color=alt.Color("kind:N", scale=alt.Scale(domain=kinds, range=[STATES[k][1] for k in kinds]),
                             legend=None),
        strokeDash=alt.StrokeDash("kind:N", scale=alt.Scale(domain=kinds, range=[STATES[k][2] for k in kinds]),
                                  legend=None),
        tooltip=[alt.Tooltip("state:N", title="alert"), alt.Tooltip("at:T", title="opened", format="%Y-%m-%d %H:%M"),
                 alt.Tooltip("label:N", title="why")])


def _panel(data: pd.DataFrame, field: str, title: str, color: str, x: alt.X, tooltip: list, markers, height: int):
    y = alt.Y(f"{field}:Q", title=None, scale=alt.Scale(domain=fitted(list(data[field])), zero=False, nice=False),
              axis=alt.Axis(format="~r", tickCount=5, minExtent=AXIS_PX, maxExtent=AXIS_PX, grid=True))
    line = alt.Chart(data).mark_line(point=alt.OverlayMarkDef(size=40, color=color), color=color, strokeWidth=2).encode(
        x=x, y=y, tooltip=tooltip)
    layers = [line] + ([markers] if markers is not None else [])
    chart = alt.layer(*layers).properties(height=height + DECORATION_PX,
                                          title=alt.Title(title, anchor="start", fontSize=14))
    st.altair_chart(chart, width="stretch")


def trend(series: dict, markers: list[dict], label: str, candidate: str, baseline: str) -> None:
    """One panel per device (its own fitted scale) and the ratio panel, on one time axis, with alert markers."""
    values = frame(series["values"])
    domain = [values["at"].min().isoformat(), values["at"].max().isoformat()]
    x = alt.X("at:T", title=None, scale=alt.Scale(domain=domain, padding=12),
              axis=alt.Axis(format="%b %d", labelAngle=0, tickCount=8))
    when = alt.Tooltip("at:T", title="finished (UTC)", format="%Y-%m-%d %H:%M")
    rules = _markers(markers, x)
    if markers:
        st.markdown(legend(markers))
    for device, color in zip((candidate, baseline), DEVICE_COLORS):
        mine = values[values["device"] == device]
        if mine.empty:
            st.caption(f"{md_escape(device)}: no run with {md_escape(label)}.")
            continue
        _panel(mine, "value", f"{device}: {label}", color, x,
               [when, alt.Tooltip("value:Q", title=label, format=",.4~r"), "run_id:N", "source:N"], rules, PANEL_PX)
    if series["ratios"]:
        _panel(frame(series["ratios"]), "ratio", f"ratio {candidate} / {baseline}", "#333333", x,
               [when, alt.Tooltip("ratio:Q", format=".4f"), "candidate_run:N", "baseline_run:N"], rules,
               PANEL_PX + 30)


def sparkline(points: list[float | None], width: int = 96, height: int = 26) -> str:
    """A ratio series as a small line (None points skipped), the last point marked: an <img> of an SVG data URI,
    which st.html keeps (its sanitiser drops inline <svg>)."""
    known = [(i, v) for i, v in enumerate(points) if v is not None]
    if len(known) < 2:
        return ""
    lo, hi = min(v for _, v in known), max(v for _, v in known)
    span = (hi - lo) or abs(hi) or 1.0
    xs = lambda i: 2 + (width - 6) * i / max(len(points) - 1, 1)
    ys = lambda v: height - 3 - (height - 6) * (v - lo) / span if hi != lo else height / 2
    path = " ".join(f"{xs(i):.1f},{ys(v):.1f}" for i, v in known)
    last_x, last_y = xs(known[-1][0]), ys(known[-1][1])
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}"><polyline points="{path}" fill="none" stroke="#4c78a8" '
           f'stroke-width="1.5"/><circle cx="{last_x:.1f}" cy="{last_y:.1f}" r="2.5" fill="#4c78a8"/></svg>')
    encoded = base64.b64encode(svg.encode()).decode()
    return f'<img src="data:image/svg+xml;base64,{encoded}" width="{width}" height="{height}" alt="">'
