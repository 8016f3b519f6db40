"""The dashboard in a real browser: `runner dashboard` serves it on 127.0.0.1 (a free port) over a store with the
reference report, a measured job with a trend and an open alert; Debian's headless chromium driven by Playwright
goes through every page at 1400 px as a person would: the Overview's rows and a click on one, picking a pair on
Compare and downloading its CSV, a metric on Trends, a run on Runs, a problem on Problems, a tab on Alerts. No page
scrolls sideways. Screenshots are kept in test-artifacts/ (git-ignored).

No browser is downloaded: Playwright launches /usr/bin/chromium (`make system-deps` installs it with apt-get).
"""
from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from db.engine import open_store, session_scope
from db.models import Alert
from tests.test_dashboard import MEASURED_FP, T0, seed

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # --no-sandbox: tests run as root
START_TIMEOUT_S = 90  # streamlit's first start imports pandas, pyarrow and altair: ~10 s on 2 cores
WIDTH = 1400  # the narrowest window the pages are laid out for without sideways scrolling
# elements that could be wider than the page: tables, the data grid's scroller, the Overview, charts
OVERFLOW_JS = """() => Array.from(document.querySelectorAll(
    '[data-testid=stMain], [data-testid=stTable], .dvn-scroller, [data-testid=stHtml], [data-testid=stVegaLiteChart]'))
  .filter(e => e.scrollWidth > e.clientWidth + 2).map(e => `${e.getAttribute('data-testid') || e.className}: `
                                                         + `${e.scrollWidth} > ${e.clientWidth}`)"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def dashboard_url(tmp_path_factory):
    from core import rundoc

    tmp = tmp_path_factory.mktemp("browser")
    db = f"sqlite:///{tmp / 'store.db'}"
    docs = [rundoc.read(REPO / "examples" / f"reference-{d}.json") for d in ("910B3", "A100")]
    runs = seed(db, docs)["docs"]
    with session_scope(open_store(db)) as s:  # an open alert on the measured job's incremental speed
        s.add(Alert(series=f"{MEASURED_FP}/decode_tokens_per_s/910B3-vs-A100/bs1", fingerprint=MEASURED_FP,
                    metric="decode_tokens_per_s", candidate_device="910B3", baseline_device="A100", batch_size=1,
                    opened_candidate_run=runs[4]["run_id"], opened_baseline_run=runs[3]["run_id"],
                    latest_candidate_run=runs[4]["run_id"], latest_baseline_run=runs[3]["run_id"], state="active",
                    moved="candidate fell", ratio=0.5455, baseline_ratio=0.6, change_pct=-9.1,
                    reason="candidate run fell 9.1% (limit -5.0%)", acknowledged=False, resolved_manually=False,
                    opened_at=T0 + dt.timedelta(days=5), updated_at=T0 + dt.timedelta(days=5)))
    port = _free_port()
    log = tmp / "dashboard.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "runner.cli", "dashboard", "--port", str(port), "--db", db],
                                cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"runner dashboard exited with {proc.returncode}:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(url + "_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the dashboard did not answer on {url} within {START_TIMEOUT_S} s:\n{log.read_text()}")
            time.sleep(0.3)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the CLI and the streamlit process it started
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture
def page():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} not found: run `make test` (its system-deps step installs Debian's chromium), "
                    "or `apt-get install -y chromium`")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            # tall viewport: Streamlit scrolls inside its own container, so a full-page shot would stop at the fold
            yield browser.new_page(viewport={"width": WIDTH, "height": 2000}, accept_downloads=True)
        finally:
            browser.close()


def settle(page, name: str) -> None:
    """Let charts and fonts settle, keep a screenshot, and check that nothing is wider than the page."""
    page.wait_for_timeout(1500)
    page.screenshot(path=str(ARTIFACTS / f"dashboard-{name}.png"), full_page=True)
    assert page.evaluate(OVERFLOW_JS) == [], f"{name} scrolls sideways at {WIDTH} px"


def pick(page, label: str, option: str) -> None:
    """Choose an option of a Streamlit selectbox by its label, as a user does: open it, click the option."""
    page.get_by_role("combobox", name=label).click()
    page.get_by_role("option", name=option, exact=True).click()


def selected(page, label: str) -> str:
    return page.get_by_role("combobox", name=label).input_value()


def cells(page) -> list[list[str]]:
    return [[c.strip() for c in row.split("\t")] for row in page.locator("table tr").all_inner_texts()]


def test_overview_rows_and_a_click_that_opens_the_trend(dashboard_url, page):
    page.goto(dashboard_url, wait_until="domcontentloaded")
    page.locator("table.ov").wait_for(timeout=60_000)
    settle(page, "overview")
    text = page.locator("table.ov").inner_text()
    for shown in ("demo-measured", "codellama-34b-instruct", "0.5455", "0.0683", "0.5397", "active", "none open"):
        assert shown in text
    # a sparkline per headline metric of the measured job; the reference report is one point: no line to draw
    assert page.locator("table.ov img").count() == 3
    page.locator("table.ov a[href*='metric=decode_tokens_per_s']").first.click()  # open a row's trend
    page.get_by_text("ratio 910B3 / A100").first.wait_for(timeout=60_000)
    page.locator("[data-testid=stVegaLiteChart] canvas, [data-testid=stVegaLiteChart] svg").nth(2).wait_for()
    settle(page, "trends")
    assert selected(page, "Metric") == "incremental speed (tokens/s) (open alert)"
    assert "Open alert (active) on this series" in page.inner_text("body")


def test_compare_pick_a_pair_and_download_the_csv(dashboard_url, page):
    page.goto(dashboard_url + "compare", wait_until="domcontentloaded")
    page.get_by_text("Copy or download").wait_for(timeout=60_000)  # the page's last section: all rendered
    page.get_by_role("cell", name="0.5455", exact=True).first.wait_for(timeout=30_000)  # the measured job
    pick(page, "Job", "codellama-34b-instruct · CodeLlama-34b-Instruct-hf · 503d79e90157b72b · 910B3, A100")
    page.get_by_role("cell", name="0.5397", exact=True).first.wait_for(timeout=30_000)
    settle(page, "compare")
    assert ["passed", "54", "53", "1.0189"] in cells(page) and ["ratio", "1", "0.0683", "0.5397"] in cells(page)
    pick(page, "Candidate", "A100")  # the reverse pair
    pick(page, "Baseline", "910B3")
    page.get_by_role("cell", name="0.9815", exact=True).first.wait_for(timeout=30_000)  # 53 / 54
    with page.expect_download() as download:
        page.get_by_role("button", name="CSV").click()
    csv = Path(download.value.path()).read_text()
    assert download.value.suggested_filename == "codellama-34b-instruct-A100-vs-910B3.csv"
    assert "passed,53,54,0.9815" in csv


def test_runs_open_a_run_without_sideways_scrolling(dashboard_url, page):
    page.goto(dashboard_url + "runs", wait_until="domcontentloaded")
    page.get_by_text("Run detail").wait_for(timeout=60_000)
    pick(page, "Run", "3f0c9f2e-1b7a-4c55-9a2e-910b30000001 · 910B3 · codellama-34b-instruct · 2024-06-01 00:00 UTC")
    page.get_by_text("imported from “published report").wait_for(timeout=30_000)
    settle(page, "runs")
    body = page.inner_text("body")
    assert "perf[].*.p10" in body and "perf[]..p10" not in body  # the stored list as written, not as markdown


def test_problems_and_alerts(dashboard_url, page):
    page.goto(dashboard_url + "problems", wait_until="domcontentloaded")
    page.get_by_text("Side by side").wait_for(timeout=60_000)
    pick(page, "Job", "demo-measured · CodeLlama-34b-Instruct-hf · 0123456789abcdef · 910B3, A100")
    page.get_by_text("Passed on one device only", exact=True).wait_for(timeout=30_000)
    pick(page, "Problem", "HumanEval/6: 910B3 failed, A100 passed")
    page.get_by_text("return 6  # A100").wait_for(timeout=30_000)
    settle(page, "problems")
    page.goto(dashboard_url + "alerts", wait_until="domcontentloaded")
    page.get_by_role("tab", name="Resolved (0)").click(timeout=60_000)
    page.get_by_text("No alert has been resolved yet.").wait_for(timeout=30_000)
    page.get_by_role("tab", name="Open (1)").click()
    page.get_by_text("candidate run fell 9.1% (limit -5.0%)").wait_for(timeout=30_000)
    settle(page, "alerts")


def test_a_page_opened_directly_on_a_fresh_server_goes_through_the_router(dashboard_url, page):
    """A bookmarked page URL: still the app's navigation and store panel (a pages/ directory would be served on
    its own then, without them)."""
    page.goto(dashboard_url + "runs", wait_until="domcontentloaded")
    page.get_by_role("button", name="Refresh").wait_for(timeout=60_000)  # the router's sidebar
    sidebar = page.locator("[data-testid=stSidebar]").inner_text()
    assert "Store:" in sidebar
    for title in ("Overview", "Compare", "Trends", "Problems", "Runs", "Alerts"):
        assert title in sidebar
