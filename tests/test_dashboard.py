"""The dashboard, page by page, through Streamlit's AppTest against seeded stores on SQLite and PostgreSQL: the numbers
each page shows (the reference report's ratios 1.0189, 0.0683, 0.5397; a measured job's McNemar test and intervals),
and the states a store can be in (empty, one device, behind the schema, unreachable): a message with the fixing
command, never an exception.
"""
from __future__ import annotations

import copy
import datetime as dt
import uuid
from pathlib import Path

import pytest
import streamlit as st
from sqlalchemy import text
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner

from db import store
from db.engine import make_engine, open_store, session_scope, upgrade
from db.models import Alert

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")
PAGES = ("views/overview.py", "views/compare.py", "views/trends.py", "views/problems.py", "views/runs.py",
         "views/alerts.py")
COMPARE = "views/compare.py"
REFERENCE_FP = "503d79e90157b72b"
MEASURED_FP = "0123456789abcdef"
T0 = dt.datetime(2025, 3, 1, tzinfo=dt.timezone.utc)
# the measured job: 10 problems; 910B3 passes 0-5, A100 passes 0-3 and 6 -> 2 vs 1 discordant, McNemar p = 1
PASSES = {"910B3": {0, 1, 2, 3, 4, 5}, "A100": {0, 1, 2, 3, 6}}
ENVIRONMENTS = {
    "910B3": {"torch": "2.1.0", "torch_npu": "2.1.0.post6", "cann": "8.0.RC2", "driver": "24.1.rc2", "cuda": None,
              "transformers": "4.44.0", "python": "3.10.14"},
    "A100": {"torch": "2.1.0", "torch_npu": None, "cann": None, "driver": "535.104.05", "cuda": "12.1",
             "transformers": "4.44.0", "python": "3.10.14"},
}


def measured_doc(reference_docs, device: str, finished: dt.datetime, decode: list[float], first: list[float]) -> dict:
    """A measured run of the 10-problem job: raw repeats, bandwidth, per-problem results, a token probe."""
    doc = copy.deepcopy(reference_docs[0 if device == "910B3" else 1])
    doc.update(run_id=str(uuid.uuid4()), source="measured", imported_from=None, missing=[],
               started_at=(finished - dt.timedelta(hours=1)).isoformat(), finished_at=finished.isoformat(),
               environment=ENVIRONMENTS[device])
    doc["device"]["name"] = "Ascend910B3" if device == "910B3" else "NVIDIA A100-SXM4-80GB"
    doc["job"].update(name="demo-measured", fingerprint=MEASURED_FP)
    med = sorted(decode)[len(decode) // 2]
    doc["perf"] = [{"batch_size": 1, "prompt_tokens": 128, "new_tokens": 128, "warmup": 2, "repeats": len(decode),
                    "first_token_tokens_per_s": {"median": sorted(first)[len(first) // 2], "raw": first},
                    "decode_tokens_per_s": {"median": med, "raw": decode},
                    "bandwidth_gbps": med * 34.0, "bandwidth_util": med * 34.0 / (1600 if device == "910B3" else 2039),
                    "peak_memory_bytes": 40 * 2**30, "cpu_other_cores": 0.05, "cpu_contention": False}]
    results = [{"task_id": f"HumanEval/{i}", "sample": 0, "passed": i in PASSES[device],
                "completion": f"    return {i}  # {device}\n",
                "verdict": "passed" if i in PASSES[device] else "failed: AssertionError", "generated_tokens": 7}
               for i in range(10)]
    passed = len(PASSES[device])
    doc["humaneval"] = {"problems": 10, "samples_per_problem": 1, "passed": passed, "pass_at_k": {"1": passed / 10},
                        "results": results}
    doc["token_probe"] = {"tasks": ["HumanEval/0", "HumanEval/1"],
                          "tokens": [[1, 2, 3, 4], [5, 6, 7, 8] if device == "910B3" else [5, 6, 9, 9]]}
    return doc


def seed(url: str, reference_docs) -> dict:
    """The two reference documents, and the measured job: A100 twice, 910B3 three times (a trend)."""
    engine = open_store(url)
    for doc in reference_docs:
        store.push(engine, doc)
    docs = [
        measured_doc(reference_docs, "A100", T0, [16.4, 16.5, 16.6], [18.0, 18.1, 18.2]),
        measured_doc(reference_docs, "910B3", T0 + dt.timedelta(days=1), [8.0, 8.1, 8.2], [1.20, 1.22, 1.24]),
        measured_doc(reference_docs, "910B3", T0 + dt.timedelta(days=2), [8.8, 9.0, 9.2], [1.23, 1.24, 1.25]),
        measured_doc(reference_docs, "A100", T0 + dt.timedelta(days=3), [16.0, 16.5, 17.0], [18.1, 18.2, 18.3]),
        measured_doc(reference_docs, "910B3", T0 + dt.timedelta(days=4), [8.9, 9.0, 9.1], [1.25, 1.26, 1.27]),
    ]
    for doc in docs:
        store.push(engine, doc)
    return {"engine": engine, "docs": docs}


@pytest.fixture(autouse=True)
def _fresh_caches():
    st.cache_data.clear()
    st.cache_resource.clear()
    yield


@pytest.fixture
def seeded(store_url, reference_docs, monkeypatch):
    monkeypatch.setenv("DEVCOMPARE_DB_URL", store_url)
    return {"url": store_url, **seed(store_url, reference_docs)}


def app(page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60).run()
    if page is not None and page != PAGES[0]:
        at.switch_page(page).run()
    return at


def texts(at: AppTest) -> str:
    """Everything a page wrote as text: markdown, captions, alerts, code, tables and metrics."""
    parts = []
    for kind in ("markdown", "caption", "info", "warning", "error", "success", "code", "subheader"):
        parts += [str(e.value) for e in getattr(at, kind)]
    parts += [e.value.to_string() for e in at.table]
    parts += [f"{e.label}={e.value}" for e in at.metric]
    return "\n".join(parts)


def table_rows(table) -> list[list[str]]:
    frame = table.value
    return [list(frame.columns)] + frame.astype(str).values.tolist()


# --- Compare ------------------------------------------------------------------------------------------------------

def test_compare_reference_report(seeded):
    at = app(COMPARE)
    at.selectbox(key="job").set_value(REFERENCE_FP).run()
    assert not at.exception
    assert at.selectbox(key="candidate").value == "910B3" and at.selectbox(key="baseline").value == "A100"
    acc, speed = table_rows(at.table[0]), table_rows(at.table[1])
    assert acc == [["", "910B3", "A100", "ratio"], ["HumanEval problems", "164", "164", "1"],
                   ["passed", "54", "53", "1.0189"], ["pass@1", "0.3293", "0.3232", "1.0189"]]
    assert speed[1:] == [["910B3", "1", "1.2386", "8.932"], ["A100", "1", "18.123", "16.551"],
                         ["ratio", "1", "0.0683", "0.5397"]]
    shown = texts(at)
    # imported aggregates have no per-problem outcomes: the test is "not available", not invented
    assert "Significance: **not available**" in shown and "no per-problem results" in shown
    # ...but 54 vs 53 cannot be significant whatever the outcomes are (the smallest McNemar p of a 1-problem gap is 1)
    assert "a difference of 1 problem(s) on the same problems is **not significant** whatever" in shown
    assert "no raw repeats stored" in shown
    # imported aggregates keep no repeats: how many there were is unknown, not zero
    assert [r[4] for r in table_rows(at.table[2])[1:]] == ["unknown / unknown"] * 2
    assert "Greedy token agreement: **not available** (the 910B3 and A100 runs are imported" in shown
    assert "carry no environment" in shown
    assert "imported from “published report: CodeLlama-34b-Instruct" in shown and "date not in the source" in shown
    md = at.code[0].value
    assert "| passed | 54 | 53 | 1.0189 |" in md and "| ratio | 1 | 0.0683 | 0.5397 |" in md
    assert [b.proto.label for b in at.get("download_button")] == ["CSV", "Markdown", "README md", "README html"]
    assert not at.exception


def test_compare_measured_job_statistics(seeded):
    at = app(COMPARE)
    at.selectbox(key="job").set_value(MEASURED_FP).run()
    assert not at.exception
    acc = table_rows(at.table[0])
    assert acc[2] == ["passed", "6", "5", "1.2000"] and acc[3] == ["pass@1", "0.6000", "0.5000", "1.2000"]
    shown = texts(at)
    # 2 problems pass on 910B3 only, 1 on A100 only: exact McNemar p = 1, labelled not significant
    assert "**not significant (exact McNemar p = 1 on 2 vs 1 problems passed on one device only" in shown
    assert "pass@1 difference +0.1000 over 10 paired problems (95% paired-bootstrap interval" in shown
    intervals = table_rows(at.table[2])
    decode = next(r for r in intervals if r[1] == "incremental speed (tokens/s)")
    assert decode[2] == "0.5455" and decode[4] == "3 / 3"  # 9.0 / 16.5 from the newest run of each device
    lo, hi = (float(x) for x in decode[3].split(" to "))
    assert lo <= 9.0 / 16.5 <= hi and lo >= 8.9 / 17.0 - 1e-4 and hi <= 9.1 / 16.0 + 1e-4  # 4 decimals shown
    bandwidth = table_rows(at.table[3])
    assert bandwidth[1][:5] == ["910B3", "1", "306 GB/s", "19.1%", "40 GiB"]
    assert bandwidth[2][:4] == ["A100", "1", "561 GB/s", "27.5%"]
    assert "Greedy token agreement: **75.00%** of 8 probe tokens, first divergence at token 2 of HumanEval/1" in shown
    env = {r[0]: r[1:] for r in table_rows(at.table[4])[1:]}
    assert env["torch"] == ["2.1.0", "2.1.0", "same"]
    assert env["CANN"] == ["8.0.RC2", "not recorded", "differs"]
    assert env["driver"] == ["24.1.rc2", "535.104.05", "differs"]
    assert env["CUDA"] == ["not recorded", "12.1", "differs"]


def test_compare_any_pair_and_same_device(seeded):
    at = app(COMPARE)
    at.selectbox(key="job").set_value(MEASURED_FP).run()
    at.selectbox(key="candidate").set_value("A100").run()
    at.selectbox(key="baseline").set_value("910B3").run()
    assert not at.exception
    assert table_rows(at.table[0])[2] == ["passed", "5", "6", "0.8333"]
    at.selectbox(key="baseline").set_value("A100").run()
    assert not at.exception
    assert "Pick two different device classes" in texts(at)


def test_compare_energy_row_and_a_job_without_eager_timing(tmp_path, reference_docs, monkeypatch):
    """Tokens per joule per batch size with the ratio, n/a with the reason where a side has no meter; a job with no
    perf records shows one line instead of an empty speed table."""
    url = f"sqlite:///{tmp_path / 'energy.db'}"
    engine = open_store(url)
    no_meter = "no RAPL: /sys/class/powercap does not exist on this host"
    for doc, rec in zip(reference_docs, ({"available": True, "reason": None, "source": "npu-smi", "interval_s": 1.0,
                                          "devices": 2, "decode_j_per_token": 0.4, "tokens_per_joule": 2.5},
                                         {"available": True, "reason": None, "source": "nvml energy counter",
                                          "interval_s": 0.05, "devices": 2, "decode_j_per_token": 0.5,
                                          "tokens_per_joule": 2.0})):
        doc = copy.deepcopy(doc)
        doc["extra"] = {"energy": [{"batch_size": 1, **rec}, {"batch_size": 4, "available": False,
                                                               "reason": no_meter}]}
        store.push(engine, doc)
    serving_only = [copy.deepcopy(d) for d in reference_docs]
    for doc in serving_only:
        doc.update(run_id=str(uuid.uuid4()), perf=[])
        doc["job"].update(name="serving-only", fingerprint=MEASURED_FP)
        store.push(engine, doc)
    monkeypatch.setenv("DEVCOMPARE_DB_URL", url)
    at = app(COMPARE)
    at.selectbox(key="job").set_value(REFERENCE_FP).run()
    assert not at.exception
    energy = table_rows(at.table[3])
    assert energy[0] == ["batch size", "metric", "910B3", "A100", "ratio", "better"]
    assert energy[1] == ["1", "decode energy efficiency (tokens/J)", "2.5", "2", "1.2500", "higher"]
    assert energy[2] == ["4", "decode energy efficiency (tokens/J)", f"n/a ({no_meter})", f"n/a ({no_meter})",
                         "n/a", "higher"]
    assert "910B3: npu-smi, a reading every 1 s, 2 devices" in texts(at)
    assert "| 1 | decode energy efficiency (tokens/J) | 2.5 | 2 | 1.2500 | higher |" in at.code[0].value
    at.selectbox(key="job").set_value(MEASURED_FP).run()
    assert not at.exception
    shown = texts(at)
    assert "No eager timing: neither run has perf records" in shown and "No energy records" in shown
    assert len(at.table) == 2  # accuracy and environment: no empty speed, interval or energy table
    assert table_rows(at.table[0])[2] == ["passed", "54", "53", "1.0189"]
    assert table_rows(at.table[1])[0] == ["", "910B3", "A100", "same?"]


# --- Problems, Runs, Alerts (Overview and Trends: test_dashboard_overview.py) -----------------------------------------------------------------------------

def test_problems_one_device_only_and_side_by_side(seeded):
    at = app("views/problems.py")
    at.selectbox(key="job").set_value(MEASURED_FP).run()
    assert not at.exception
    assert {m.label: m.value for m in at.metric} == {"passed on both": "4", "910B3 only": "2", "A100 only": "1",
                                                      "neither": "3"}
    assert "not significant (exact McNemar p = 1" in texts(at)
    one_sided = table_rows(at.table[0])
    assert [r[:2] for r in one_sided[1:]] == [["HumanEval/4", "910B3"], ["HumanEval/5", "910B3"],
                                             ["HumanEval/6", "A100"]]
    assert one_sided[1][2:] == ["passed", "failed: AssertionError"]
    at.selectbox(key="task").set_value("HumanEval/6").run()
    assert not at.exception
    assert [c.value.rstrip() for c in at.code] == ["    return 6  # 910B3", "    return 6  # A100"]
    # an older run can be picked; the imported reference job says why it has nothing to diff
    at.selectbox(key="job").set_value(REFERENCE_FP).run()
    assert not at.exception
    assert "has no per-problem results (an imported report gives only totals)" in texts(at)


def test_runs_list_filters_and_detail(seeded):
    at = app("views/runs.py")
    assert not at.exception
    assert "7 matching run(s)." in texts(at)
    assert len(at.dataframe[0].value) == 7
    at.multiselect(key="devices").set_value(["A100"]).run()
    at.selectbox(key="source").set_value("measured").run()
    assert "2 matching run(s)." in texts(at)
    newest_a100 = seeded["docs"][3]["run_id"]
    assert at.selectbox(key="run").value == newest_a100
    shown = texts(at)
    assert "NVIDIA A100-SXM4-80GB" in shown and "535.104.05" in shown  # fields and environment
    perf = {r[0]: r[1] for r in table_rows(at.table[2])[1:]}
    assert perf["incremental speed"] == "16.5 tokens/s" and perf["bandwidth utilisation"] == "27.5%"
    assert perf["peak device memory"] == "40 GiB" and perf["time to first token"] == "not recorded"
    problems = at.dataframe[1].value
    assert len(problems) == 10 and problems["passed"].sum() == 5
    at.text_input(key="id_prefix").set_value("3f0c9f2e").run()
    at.selectbox(key="source").set_value(None).run()
    at.multiselect(key="devices").set_value([]).run()
    assert "2 matching run(s)." in texts(at) and "No environment recorded" in texts(at)
    assert not at.exception


def test_alerts_open_acknowledged_resolved(seeded):
    at = app("views/alerts.py")
    assert not at.exception
    assert "No alerts yet" in texts(at)
    docs = seeded["docs"]
    with session_scope(seeded["engine"]) as s:
        for i, (state, ack) in enumerate((("active", False), ("suspected", True), ("resolved", False))):
            s.add(Alert(series=f"{MEASURED_FP}/m{i}/910B3-vs-A100", fingerprint=MEASURED_FP, metric=f"m{i}",
                        candidate_device="910B3", baseline_device="A100", batch_size=None,
                        opened_candidate_run=docs[4]["run_id"], opened_baseline_run=docs[3]["run_id"],
                        latest_candidate_run=docs[4]["run_id"], latest_baseline_run=docs[3]["run_id"],
                        state=state, moved="candidate fell", ratio=0.5, baseline_ratio=0.55, change_pct=-9.1,
                        reason=f"reason {i}", acknowledged=ack, resolved_manually=False,
                        opened_at=T0 + dt.timedelta(days=5), updated_at=T0 + dt.timedelta(days=5, hours=i)))
    st.cache_data.clear()
    at = app("views/alerts.py")
    assert not at.exception
    assert "1 open regression(s), 1 acknowledged, 1 resolved." in texts(at)
    assert [t.label for t in at.tabs] == ["Open (1)", "Acknowledged (1)", "Resolved (1)", "Outliers (0)"]
    open_rows = table_rows(at.tabs[0].table[0])
    assert open_rows[1][1:4] == ["2025-03-05 00:00 UTC", "active", "m0"]  # since: when the opening run finished
    assert "-9.1%" in open_rows[1] and "reason 0" in open_rows[1]
    at.tabs[3].run()
    assert "No outliers: no lone bad run that went back on its own." in texts(at)  # an empty tab says what it means


# --- store states: every page says what to run ------------------------------------------------------------------------

@pytest.mark.parametrize("page", PAGES)
def test_empty_store_says_how_to_fill_it(store_url, monkeypatch, page):
    monkeypatch.setenv("DEVCOMPARE_DB_URL", store_url)
    at = app(page)
    assert not at.exception
    assert "has no runs yet" in at.info[0].value
    assert "runner push examples/reference-910B3.json examples/reference-A100.json" in at.info[0].value


@pytest.mark.parametrize("page", PAGES[1:4])
def test_single_device_names_the_missing_one(tmp_path, reference_docs, monkeypatch, page):
    url = f"sqlite:///{tmp_path / 'one.db'}"
    store.push(open_store(url), reference_docs[0])  # 910B3 only
    monkeypatch.setenv("DEVCOMPARE_DB_URL", url)
    at = app(page)
    assert not at.exception
    warning = at.warning[0].value
    assert "has runs on 910B3 only, none on A100" in warning and "runner submit --device A100" in warning
    if page == "views/compare.py":
        assert table_rows(at.table[0])[2] == ["passed", "54", "missing", "n/a"]


def test_cpu_only_store_compares_cpu_against_a_missing_a100(tmp_path, reference_docs, monkeypatch):
    """After a first `runner submit --device cpu`: the cpu run's numbers, A100 missing, and what to run."""
    url = f"sqlite:///{tmp_path / 'cpu.db'}"
    doc = measured_doc(reference_docs, "A100", T0, [30.0, 31.0, 32.0], [20.0, 21.0, 22.0])
    doc["device"].update({"class": "cpu", "type": "cpu", "name": "AMD EPYC", "count": 1})
    store.push(open_store(url), doc)
    monkeypatch.setenv("DEVCOMPARE_DB_URL", url)
    at = app(COMPARE)
    assert not at.exception
    assert (at.selectbox(key="candidate").value, at.selectbox(key="baseline").value) == ("cpu", "A100")
    assert "has runs on cpu only, none on A100" in at.warning[0].value
    assert table_rows(at.table[0])[2] == ["passed", "5", "missing", "n/a"]
    assert table_rows(at.table[1])[1:] == [["cpu", "1", "21", "31"], ["A100", "1", "missing", "missing"],
                                           ["ratio", "1", "n/a", "n/a"]]
    assert "Significance: **not available**: there is no A100 run" in texts(at)


@pytest.mark.parametrize("page", PAGES)
def test_store_behind_the_schema_names_the_upgrade(tmp_path, monkeypatch, page):
    from alembic import command

    from db.engine import _alembic_config

    url = f"sqlite:///{tmp_path / 'old.db'}"
    with make_engine(url).begin() as conn:
        command.upgrade(_alembic_config(conn), "0001")  # as an older release of the code left it
    monkeypatch.setenv("DEVCOMPARE_DB_URL", url)
    at = app(page)
    assert not at.exception
    assert "revision 0001" in at.error[0].value and f"runner db upgrade --db '{url}'" in at.error[0].value


def test_store_newer_than_the_code_says_to_update_this_host(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'new.db'}"
    engine = make_engine(url)
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    monkeypatch.setenv("DEVCOMPARE_DB_URL", url)
    at = app()
    assert not at.exception
    assert "this host's code is older than the store" in at.error[0].value
    assert "runner db upgrade" not in at.error[0].value


@pytest.mark.parametrize("page", PAGES)
def test_unreachable_store_says_what_to_do(monkeypatch, page):
    monkeypatch.setenv("DEVCOMPARE_DB_URL", "postgresql://nobody@127.0.0.1:1/none")
    at = app(page)
    assert not at.exception
    assert "127.0.0.1" in at.error[0].value and "runner dashboard --db URL" in at.error[0].value


def test_db_argument_after_the_script_wins(tmp_path, reference_docs, monkeypatch):
    """`streamlit run dashboard/app.py -- --db URL` reads that store, whatever DEVCOMPARE_DB_URL says."""
    url = f"sqlite:///{tmp_path / 'arg.db'}"
    for doc in reference_docs:
        store.push(open_store(url), doc)
    monkeypatch.setattr("sys.argv", ["app.py", "--db", url])
    at = app(COMPARE)
    assert not at.exception
    assert table_rows(at.table[1])[3] == ["ratio", "1", "0.0683", "0.5397"]


def test_runner_dashboard_execs_streamlit_with_the_store(monkeypatch, tmp_path):
    import os
    import sys

    from runner.cli import app as cli

    calls = []

    def fake_execve(path, argv, env):
        calls.append((path, argv, env))
        raise SystemExit(0)

    monkeypatch.setattr(os, "execve", fake_execve)
    url = f"sqlite:///{tmp_path / 'x.db'}"
    result = CliRunner().invoke(cli, ["dashboard", "--port", "8765", "--db", url])
    assert result.exit_code == 0, result.output
    (path, cmd, env), = calls
    assert path == sys.executable and cmd[:4] == [sys.executable, "-m", "streamlit", "run"] and cmd[4] == APP
    assert cmd[cmd.index("--server.port") + 1] == "8765"
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--server.headless") + 1] == "true"
    assert env["DEVCOMPARE_DB_URL"] == url and url not in cmd  # the URL (maybe with a password) stays out of `ps`
