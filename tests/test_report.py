"""`runner report`: the ModelZoo README's "competitor comparison" from the store.

On the reference report (examples/reference-*.json pushed, job jobs/codellama-34b-instruct.toml) it reproduces the
guide's two tables, the same rows, columns and numbers (as far as printed), in Chinese with the guide's own wording
and in English; the footnote names the runs and what can be said about significance; `--format html` is one file
that needs no network.
"""
from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from db import store
from db.engine import open_store
from runner.cli import app
from tests.test_dashboard import MEASURED_FP, seed

JOB = "jobs/codellama-34b-instruct.toml"
# The guide's tables (Ascend ModelZoo, CodeLlama-34b-Instruct, "竞品对比"), numbers as it prints them.
GUIDE_ACCURACY = [["", "910B3", "A100", "对比"],
                  ["问题总数", 164, 164, 1],
                  ["通过总数", 54, 53, 1.018867924528302],
                  ["pass@1", 0.32926829268292684, 0.3231707317073171, 1.018867924528302]]
GUIDE_SPEED = [["设备", "batch_size", "首token推理速度(token/s)", "增量推理速度(token/s)"],
               ["910B3", 1, 1.238550074221983, 8.932253698655556],
               ["A100", 1, 18.12342392948192, 16.55063728397924],
               ["对比", 1, 0.06833973972253644, 0.5396924327078233]]
ENGLISH = {"对比": "ratio", "问题总数": "HumanEval problems", "通过总数": "passed", "设备": "device",
           "batch_size": "batch size", "首token推理速度(token/s)": "first-token speed (tokens/s)",
           "增量推理速度(token/s)": "incremental speed (tokens/s)"}


def markdown_tables(text: str) -> list[list[list[str]]]:
    """Every pipe table in the text, as rows of stripped cells (separator rows dropped)."""
    tables, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            if not re.fullmatch(r"\|(-+\|)+", line.replace(" ", "")):
                current.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif current:
            tables.append(current)
            current = []
    return tables


def same_as_guide(ours: list[list[str]], guide: list[list], words: dict[str, str]) -> None:
    """Same rows and columns; a word as the guide words it; a number equal to the guide's rounded as we print it."""
    assert len(ours) == len(guide) and all(len(a) == len(b) for a, b in zip(ours, guide)), ours
    for row, guide_row in zip(ours, guide):
        for cell, expected in zip(row, guide_row):
            if isinstance(expected, str):
                assert cell == words.get(expected, expected), (row, guide_row)
            else:
                decimals = len(cell.split(".")[1]) if "." in cell else 0
                assert float(cell) == round(expected, decimals), (row, guide_row)


@pytest.fixture
def reference_store(store_url, reference_docs):
    engine = open_store(store_url)
    for doc in reference_docs:
        store.push(engine, doc)
    return store_url


def report(url: str, *args: str) -> str:
    result = CliRunner().invoke(app, ["report", "--job", JOB, "--db", url, *args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_reference_report_reproduces_the_guides_two_tables(reference_store, lang):
    text = report(reference_store, "--lang", lang, "--candidate", "910B3", "--baseline", "A100")
    words = {} if lang == "zh" else ENGLISH
    heads = ["## 竞品对比", "### 精度(HumanEval)", "### 性能"] if lang == "zh" else \
        ["## Competitor comparison", "### Accuracy (HumanEval)", "### Performance"]
    assert [line for line in text.splitlines() if line.startswith("#")] == heads
    accuracy, speed = markdown_tables(text)
    same_as_guide(accuracy, GUIDE_ACCURACY, words)
    same_as_guide(speed, GUIDE_SPEED, words)
    # the footnote: both runs, that their date and environment are unknown, and what can be said of 54 vs 53
    for run_id in ("3f0c9f2e-1b7a-4c55-9a2e-910b30000001", "3f0c9f2e-1b7a-4c55-9a2e-a10000000001"):
        assert f"`{run_id}`" in text
    if lang == "zh":
        assert "来源未给出日期" in text and "环境：未记录" in text
        assert "无论逐题结果如何，1 道题的差异都不显著" in text
    else:
        assert "the source gives no date" in text and "Environment: not recorded" in text
        assert "a difference of 1 problem(s) is not significant whatever they are" in text


def test_measured_runs_footnote_has_dates_environment_and_significance(store_url, reference_docs):
    """The measured job of the dashboard tests (no job file: its fingerprint is made up), through the module."""
    from db import report as readme
    from db.engine import session_scope

    seed(store_url, reference_docs)
    with session_scope(open_store(store_url)) as s:
        text = readme.render(readme.build(s, MEASURED_FP, "910B3", "A100"), "en", "markdown")
    assert "measured on Ascend910B3 x2, finished 2025-03-05 00:00 UTC" in text
    assert "CANN 8.0.RC2 (910B3) / not recorded (A100)" in text and "torch 2.1.0 on both" in text
    assert "6 vs 5 problems passed (+1); pass@1 difference +0.1000 over 10 paired problems" in text
    assert "not significant (exact McNemar p = 1 on 2 vs 1 problems passed on one device only" in text
    assert re.search(r"incremental speed at batch size 1: ratio 0\.5455, 95% interval [\d.]+ to [\d.]+ \(3 / 3", text)


def test_html_is_one_file_with_charts_and_no_network(reference_store, tmp_path):
    out = tmp_path / "report.html"
    report(reference_store, "--lang", "zh", "--format", "html", "--out", str(out))
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>") and '<html lang="zh-CN">' in page
    assert page.count("<svg") == 3  # pass@1, and each speed metric at batch size 1
    assert "<td>首token推理速度(token/s)</td>" not in page and "<th>首token推理速度(token/s)</th>" in page
    assert "<td>0.0683</td>" in page and "<td>1.0189</td>" in page and "对比 0.5397" in page
    assert not re.search(r"<script|<link|<img|src=|@import|url\(", page)  # nothing fetched when opened


def test_stored_text_is_escaped(store_url, reference_docs):
    engine = open_store(store_url)
    docs = [dict(d, imported_from="a *starred* | piped `report` <b>") for d in reference_docs]
    for doc in docs:
        store.push(engine, doc)
    text = report(store_url)
    assert r'imported from "a \*starred\* \| piped \`report\` \<b\>"' in text
    html_page = report(store_url, "--format", "html")
    assert "a *starred* | piped `report` &lt;b&gt;" in html_page and "<b>" not in html_page


def test_bad_language_or_format_is_one_line(reference_store):
    for args, word in ((["--lang", "fr"], "--lang must be en or zh"), (["--format", "pdf"], "--format must be")):
        result = CliRunner().invoke(app, ["report", "--job", JOB, "--db", reference_store, *args])
        assert result.exit_code == 2 and word in result.output and "Traceback" not in result.output


def test_job_without_eager_timing_has_no_empty_performance_table(tmp_path, reference_docs):
    """A serving-only job times no batch sizes: the README section has the accuracy table and no empty one."""
    from db import report as readme
    from db.engine import session_scope

    url = f"sqlite:///{tmp_path / 's.db'}"
    engine = open_store(url)
    for doc in reference_docs:
        store.push(engine, dict(doc, perf=[]))
    with session_scope(engine) as s:
        built = readme.build(s, reference_docs[0]["job"]["fingerprint"], "910B3", "A100")
        text, page = readme.render(built, "en", "markdown"), readme.render(built, "en", "html")
    assert "### Performance" not in text and len(markdown_tables(text)) == 1
    assert "Performance" not in page and page.count("<table>") == 1 and page.count("<svg") == 1
