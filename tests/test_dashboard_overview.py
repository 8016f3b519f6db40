"""The Overview (the landing page), Trends, and what people see on Compare, Runs and Alerts, through AppTest on the
seeded stores of test_dashboard.py: ratios with their change and sparkline per job and device pair, links that open
a row's comparison or trend, per-device panels on fitted scales with alert markers by state, the alerted metric shown
first, numbers in units, stored text escaped, "unknown" where nothing was recorded.
"""
from __future__ import annotations

import copy
import datetime as dt
import json
import uuid

from streamlit.testing.v1 import AppTest

from db import store
from db.engine import session_scope
from db.models import Alert
from tests.test_dashboard import (APP, COMPARE, MEASURED_FP, REFERENCE_FP, T0, app, measured_doc, table_rows,
                                  texts)
from tests.test_dashboard import _fresh_caches, seeded  # noqa: F401 - the same fixtures: fresh caches, a seeded store

TRENDS = "views/trends.py"


def add_alert(engine, docs, metric: str, state: str, batch_size: int | None = 1, **extra) -> None:
    series = f"{MEASURED_FP}/{metric}/910B3-vs-A100" + (f"/bs{batch_size}" if batch_size else "")
    with session_scope(engine) as s:
        s.add(Alert(series=series, fingerprint=MEASURED_FP, metric=metric, candidate_device="910B3",
                    baseline_device="A100", batch_size=batch_size, opened_candidate_run=docs[1]["run_id"],
                    opened_baseline_run=docs[0]["run_id"], latest_candidate_run=docs[1]["run_id"],
                    latest_baseline_run=docs[0]["run_id"], state=state, moved="candidate fell", ratio=0.4909,
                    baseline_ratio=0.55, change_pct=-10.7, reason=extra.get("reason", "ratio 0.4909 vs usual 0.55"),
                    acknowledged=False, resolved_manually=False, opened_at=T0 + dt.timedelta(days=5),
                    updated_at=T0 + dt.timedelta(days=5)))


def overview_html(at: AppTest) -> str:
    return "\n".join(h.proto.body for h in at.get("html"))


def charts(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]


# --- Overview -------------------------------------------------------------------------------------------------------

def test_overview_is_the_landing_page_with_a_row_per_job_and_pair(seeded):
    at = app()
    assert not at.exception
    assert at.title[0].value == "Overview"
    assert "2 job and device pair(s): 0 with an open alert, 1 whose latest runs are not a fair comparison" in texts(at)
    page = overview_html(at)
    measured, reference = page.split("<tr>")[2:4]  # newest job first: the measured one
    assert ">demo-measured</a>" in measured and "1.2000" in measured and "0.5455" in measured  # pass@1, 9.0 / 16.5
    assert measured.count("<img src=\"data:image/svg+xml;base64,") == 3  # a sparkline per headline metric
    assert "4 points · batch 1" in measured and "none open" in measured and ">yes<" in measured
    assert ">codellama-34b-instruct</a>" in reference and "0.0683" in reference and "0.5397" in reference
    assert "the 910B3 run is imported" in reference and ">no<" in reference
    # a metric's cell opens its trend, the job's name its comparison
    assert (f'href="trends?job={MEASURED_FP}&amp;candidate=910B3&amp;baseline=A100&amp;metric=decode_tokens_per_s"'
            in measured)
    assert f'href="compare?job={REFERENCE_FP}&amp;candidate=910B3&amp;baseline=A100"' in reference


def test_overview_shows_the_open_alert_and_lone_jobs(seeded, reference_docs):
    add_alert(seeded["engine"], seeded["docs"], "decode_tokens_per_s", "active")
    cpu = measured_doc(reference_docs, "A100", T0, [30.0], [20.0])
    cpu["device"].update({"class": "cpu", "type": "cpu", "name": "AMD EPYC", "count": 1})
    cpu["job"].update(name="smoke", fingerprint="5a5a5a5a5a5a5a5a")
    store.push(seeded["engine"], cpu)
    at = app()
    assert not at.exception
    assert "1 with an open alert" in at.error[0].value
    assert ">active</span> incremental speed" in overview_html(at)
    assert "**smoke** (`5a5a5a5a5a5a5a5a`) on cpu" in at.info[0].value  # nothing to compare yet, and why


def test_a_link_from_the_overview_opens_trends_on_its_job_pair_and_metric(seeded):
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params.update(job=REFERENCE_FP, candidate="A100", baseline="910B3", metric="first_token_tokens_per_s")
    at.switch_page(TRENDS).run()
    assert not at.exception
    assert at.selectbox(key="job").value == REFERENCE_FP
    assert (at.selectbox(key="candidate").value, at.selectbox(key="baseline").value) == ("A100", "910B3")
    assert at.selectbox(key="metric").value == "first_token_tokens_per_s"
    assert {m.label: m.value for m in at.metric}["latest ratio A100 / 910B3"] == "14.6318"  # 18.123 / 1.2386
    at.selectbox(key="metric").set_value("pass_at_1").run()  # the link applied once: the picker is the user's again
    assert at.selectbox(key="metric").value == "pass_at_1" and at.selectbox(key="job").value == REFERENCE_FP


# --- Trends ---------------------------------------------------------------------------------------------------------

def test_trends_ratio_over_time_with_alert_markers_by_state(seeded):
    add_alert(seeded["engine"], seeded["docs"], "decode_tokens_per_s", "resolved")
    at = app(TRENDS)
    at.selectbox(key="job").set_value(MEASURED_FP).run()
    assert at.selectbox(key="metric").value == "pass_at_1"  # no open alert: the first headline metric
    at.selectbox(key="metric").set_value("decode_tokens_per_s").run()
    assert not at.exception
    assert at.selectbox(key="batch_size").value == 1
    latest = {m.label: m.value for m in at.metric}
    assert latest["latest ratio 910B3 / A100"] == "0.5455"  # 9.0 / 16.5
    assert latest["latest 910B3"] == "9 tokens/s" and latest["latest A100"] == "16.5 tokens/s"
    points = table_rows(at.table[0])
    # newest first: one point each time either device got a run once both had one
    assert [r[1] for r in points[1:]] == ["0.5455", "0.5455", "0.5455", "0.4909"]
    assert "1 alert(s) on this series" in texts(at) and ":green[┈┈ resolved]" in texts(at)  # a legend by state
    panels = charts(at)
    assert [p["title"]["text"] for p in panels] == ["910B3: incremental speed (tokens/s)",
                                                     "A100: incremental speed (tokens/s)", "ratio 910B3 / A100"]
    for panel, values in zip(panels, ([8.1, 9.0, 9.0], [16.5, 16.5], [0.4909, 0.5455])):
        line, rule = panel["layer"]
        y = line["encoding"]["y"]
        lo, hi = y["scale"]["domain"]
        assert y["scale"]["zero"] is False and 0 < lo < min(values) and max(values) < hi  # fitted, not from 0
        assert y["axis"]["tickCount"] == 5
        assert rule["encoding"]["color"]["scale"]["range"] == ["#21c354"]  # resolved: green, not an active red
    at.selectbox(key="candidate").set_value("A100").run()  # the reverse pair shows the same series' alerts
    at.selectbox(key="baseline").set_value("910B3").run()
    assert not at.exception and "1 alert(s) on this series" in texts(at)
    at.selectbox(key="metric").set_value("pass_at_1").run()
    assert not at.exception
    assert {m.label: m.value for m in at.metric}["latest ratio A100 / 910B3"] == "0.8333"
    assert "No alerts on this series." in texts(at)


def test_trends_opens_on_the_metric_with_an_open_alert(seeded):
    add_alert(seeded["engine"], seeded["docs"], "first_token_tokens_per_s", "active", reason="ratio fell *a lot*")
    at = app(TRENDS)
    at.selectbox(key="job").set_value(MEASURED_FP).run()
    assert not at.exception
    assert at.selectbox(key="metric").value == "first_token_tokens_per_s"
    assert "Open alert (active) on this series: ratio fell \\*a lot\\*" in at.warning[0].value  # escaped
    assert "first-token speed (tokens/s) (open alert)" in at.selectbox(key="metric").options


# --- Compare, Runs, Alerts: what people see ------------------------------------------------------------------------

def test_compare_pair_follows_the_job_and_says_what_is_missing(seeded, reference_docs):
    cpu = measured_doc(reference_docs, "A100", T0, [30.0, 31.0, 32.0], [20.0, 21.0, 22.0])
    cpu["device"].update({"class": "cpu", "type": "cpu", "name": "AMD EPYC", "count": 1})
    cpu["job"].update(name="smoke_*test*", fingerprint="5a5a5a5a5a5a5a5a")
    store.push(seeded["engine"], cpu)
    at = app(COMPARE)
    at.selectbox(key="job").set_value(REFERENCE_FP).run()
    # short enough to show whole in the picker: no organisation before the model, no run counts
    assert "codellama-34b-instruct · CodeLlama-34b-Instruct-hf · 503d79e90157b72b · 910B3, A100" in \
        at.selectbox(key="job").options
    at.selectbox(key="job").set_value("5a5a5a5a5a5a5a5a").run()
    assert not at.exception
    # the pair of the last job (910B3 vs A100) has no run of this one: the job's own device takes its place
    assert (at.selectbox(key="candidate").value, at.selectbox(key="baseline").value) == ("cpu", "A100")
    assert "**smoke\\_\\*test\\*** · " in texts(at)  # a stored name is literal, not markdown
    at.selectbox(key="baseline").set_value("910B3").run()
    shown = texts(at)
    assert "Greedy token agreement: **not available** (there is no 910B3 run of this job)" in shown
    env = {r[0]: r[1:] for r in table_rows(at.table[-1])[1:]}
    assert env["torch"] == ["2.1.0", "no run", ""] and "differs" not in [v[2] for v in env.values()]


def test_runs_detail_reads_as_text_with_units(seeded, reference_docs):
    doc = copy.deepcopy(reference_docs[0])
    doc.update(run_id=str(uuid.uuid4()))
    doc["perf"][0]["peak_memory_bytes"] = 25276502016
    doc["humaneval"].update(generation_s=246.6015200000129, pass_at_k={"1": 0.0})
    doc["missing"] = [m for m in doc["missing"] if m not in ("perf[].peak_memory_bytes", "humaneval.generation_s")]
    store.push(seeded["engine"], doc)
    at = app("views/runs.py")
    at.text_input(key="id_prefix").set_value(doc["run_id"][:13]).run()
    assert not at.exception
    shown = texts(at)
    assert shown.count("imported from") == 1 and "imported, imported" not in shown
    fields = {r[0]: r[1] for r in table_rows(at.table[0])[1:]}
    # st.table reads cells as markdown: escaped, `perf[].*.p10` shows as itself, not as "perf[]..p10" in italics
    assert "perf\\[\\].\\*.p10" in fields["not in the source"]
    assert fields["finished"] == "not in the source" and fields["detected as"] == "not recorded"
    perf = {r[0]: r[1] for r in table_rows(at.table[1])[1:]}
    assert perf["peak device memory"] == "23.5 GiB" and perf["time to first token"] == "not recorded"
    acc = {r[0]: r[1] for r in table_rows(at.table[2])[1:]}
    assert acc["pass@k"] == "pass@1 0" and acc["generation time"] == "246.6 s" and acc["execution time"] == \
        "not recorded"
    listing = at.dataframe[0].value
    assert list(listing.columns)[:3] == ["id", "finished_at", "device_class"] and len(listing["id"][0]) == 8


def test_alerts_empty_tabs_say_what_they_mean(seeded):
    add_alert(seeded["engine"], seeded["docs"], "decode_tokens_per_s", "active", reason="why *this*")
    at = app("views/alerts.py")
    assert not at.exception
    row = table_rows(at.tabs[0].table[0])[1]
    assert "why \\*this\\*" in row and "-10.7%" in row and "0.4909" in row
    assert "No acknowledged alert" in at.tabs[1].caption[0].value
    assert "No alert has been resolved yet." in at.tabs[2].caption[0].value
