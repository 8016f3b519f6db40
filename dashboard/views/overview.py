"""Overview, the landing page: every job on every device pair it has runs on, one row each, to see at a glance
whether anything is wrong: the latest ratio (candidate / baseline) of each headline metric with its change and a
sparkline of its last points, the pair's open alert, how old each device's newest run is, and whether the two latest
runs make a fair comparison. A metric's cell opens its trend; the job's name opens the comparison.

The rows come from db/overview.py; the table is one piece of HTML (links are plain links that carry the job and
pair in the URL, so a row can also be bookmarked or opened in a new tab).
"""
import html

import streamlit as st

from core.metrics import HEADLINE, METRICS, format_value
from dashboard import _charts as charts
from dashboard import _data as data
from dashboard import _format
from dashboard import _ui as ui

st.title("Overview")
url = data.store_url()
STATE_COLORS = {"active": "#d62728", "suspected": "#e67e00"}  # a badge per open alert state
STYLE = """<style>
.ov{border-collapse:collapse;width:100%;font-size:0.9rem}
.ov th{text-align:left;font-weight:600;color:#555;border-bottom:2px solid #ddd;padding:6px 8px;vertical-align:bottom}
.ov td{border-bottom:1px solid #eee;padding:6px 8px;vertical-align:top}
.ov a{text-decoration:none;color:inherit}.ov a:hover .r,.ov a.job:hover{text-decoration:underline}
.ov .r{font-size:1.05rem;font-variant-numeric:tabular-nums}.ov .small{font-size:0.78rem;color:#666}
.ov .up{color:#1a7f37}.ov .down{color:#c62828}.ov .flat{color:#777}
.ov .badge{color:#fff;border-radius:4px;padding:1px 6px;font-size:0.78rem;font-weight:600}
.ov .ok{color:#1a7f37}.ov .no{color:#b35c00}.ov .job{font-weight:600}.ov .nw{white-space:nowrap}
.ov td.m{min-width:118px}.ov td.f{min-width:160px}
</style>"""


def _change(pct: float | None) -> str:
    if pct is None:
        return '<span class="flat" title="no earlier point">new</span>'
    css = "flat" if abs(pct) < 0.5 else "up" if pct > 0 else "down"  # every headline metric: higher is better
    return f'<span class="{css}">{_format.change(pct)}</span>'


def metric_cell(row: dict, name: str) -> str:
    m = row["metrics"][name]
    value = format_value(m["ratio"], "ratio")
    where = "" if METRICS[name].source == "humaneval" or row["batch_size"] is None else f" · batch {row['batch_size']}"
    href = ui.link("trends", row["fingerprint"], row["candidate"], row["baseline"], name)
    return (f'<a href="{html.escape(href)}" target="_self" title="Open the trend of {METRICS[name].label}">'
            f'<span class="r">{value}</span> {_change(m["change_pct"])}<br>{charts.sparkline(m["points"])}<br>'
            f'<span class="small">{_points(m["points"])}{where}</span></a>')


def _points(points: list) -> str:
    n = sum(p is not None for p in points)
    return f"{n} point{'' if n == 1 else 's'}"


def alert_cell(row: dict) -> str:
    a = row["alert"]
    if a is None:
        return '<span class="ok">none open</span>'
    metric = METRICS[a["metric"]].label if a["metric"] in METRICS else a["metric"]
    more = f'<br><span class="small">{a["open"] - 1} more open</span>' if a["open"] > 1 else ""
    ack = ", acknowledged" if a["acknowledged"] else ""
    href = ui.link("trends", row["fingerprint"], row["candidate"], row["baseline"], a["metric"])
    return (f'<a href="{html.escape(href)}" target="_self" title="{html.escape(a["reason"] or "")}">'
            f'<span class="badge" style="background:{STATE_COLORS.get(a["state"], "#777")}">{a["state"]}</span> '
            f'{html.escape(metric)}{ack}</a>{more}')


def age_cell(row: dict) -> str:
    return "<br>".join(f'<span class="nw" title="finished {_format.when(row["newest"][d])}">{html.escape(d)}: '
                       f'{_format.age(row["age"][d])} ago</span>' for d in (row["candidate"], row["baseline"]))


def fair_cell(row: dict) -> str:
    if row["comparable"]:
        return '<span class="ok">yes</span>'
    return '<span class="no">no</span><br><span class="small">' + "<br>".join(
        html.escape(w) for w in row["not_comparable"]) + "</span>"


def table(rows: list[dict]) -> str:
    heads = ["job", "pair"] + [m.label for m in HEADLINE] + ["open alert", "newest run", "comparable"]
    body = []
    for r in rows:
        job = html.escape(ui.link("compare", r["fingerprint"], r["candidate"], r["baseline"]))
        body.append(
            f'<tr><td><a class="job" href="{job}" target="_self" title="Open the comparison">'
            f'{html.escape(r["job_name"])}</a><br><span class="small">{html.escape(r["model_name"])}<br>'
            f'{r["fingerprint"]}</span></td><td class="nw">{html.escape(r["candidate"])} / {html.escape(r["baseline"])}</td>'
            + "".join(f'<td class="m">{metric_cell(r, m.name)}</td>' for m in HEADLINE)
            + f'<td>{alert_cell(r)}</td><td>{age_cell(r)}</td><td class="f">{fair_cell(r)}</td></tr>')
    head = "".join(f"<th>{html.escape(h)}</th>" for h in heads)
    return f'{STYLE}<table class="ov"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


with ui.store_errors(url):
    jobs = ui.require_runs(url)
    rows = data.overview(url)
    alerted = [r for r in rows if r["alert"] is not None]
    unfair = [r for r in rows if not r["comparable"]]
    summary = (f"{len(rows)} job and device pair(s): {len(alerted)} with an open alert, {len(unfair)} whose latest "
               "runs are not a fair comparison.")
    (st.error if alerted else st.success)(summary, icon=":material/notifications_active:" if alerted else
                                          ":material/check_circle:")
    if rows:
        st.caption("Ratio = candidate / baseline of each headline metric, latest point, its change since the previous "
                   "one and the last points of its series. Click a metric for its trend, a job for its comparison.")
        st.html(table(rows))
    lone = [j for j in jobs if len(j["devices"]) < 2]
    if lone:
        st.info("Runs on one device only, nothing to compare yet: " + "; ".join(
            f"**{ui.md(j['job_name'])}** (`{j['fingerprint']}`) on {ui.md(', '.join(j['devices']))}" for j in lone)
                + ". Run the same job on another device (`runner submit --device A100 --job JOB.toml`).",
                icon=":material/devices:")
