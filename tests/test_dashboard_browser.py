"""The dashboard in a real browser: `runner dashboard` serves it on 127.0.0.1 (a free port), Debian's headless
chromium driven by Playwright loads the Compare page, and its rendered text holds the reference report's ratios
(1.0189, 0.0683, 0.5397) as HTML table cells. A screenshot is kept in test-artifacts/ (git-ignored).

No browser is downloaded: Playwright launches /usr/bin/chromium (`make system-deps` installs it with apt-get).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from db import store
from db.engine import open_store

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # --no-sandbox: tests run as root
START_TIMEOUT_S = 90  # streamlit's first start imports pandas, pyarrow and altair: ~10 s on 2 cores


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dashboard_url(tmp_path, reference_docs):
    db = f"sqlite:///{tmp_path / 'store.db'}"
    engine = open_store(db)
    for doc in reference_docs:
        store.push(engine, doc)
    port = _free_port()
    log = tmp_path / "dashboard.log"
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


def test_compare_page_shows_the_reference_ratios_in_chromium(dashboard_url):
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} not found: run `make test` (its system-deps step installs Debian's chromium), "
                    "or `apt-get install -y chromium`")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "dashboard-compare.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            # tall viewport: Streamlit scrolls inside its own container, so a full-page shot would stop at the fold
            page = browser.new_page(viewport={"width": 1400, "height": 2600})
            page.goto(dashboard_url, wait_until="domcontentloaded")
            page.get_by_text("Copy or download").wait_for(timeout=60_000)  # the page's last section: all rendered
            page.get_by_role("cell", name="0.5397", exact=True).first.wait_for(timeout=30_000)
            page.wait_for_timeout(500)  # let fonts and icons settle for the screenshot
            page.screenshot(path=str(shot), full_page=True)
            body = page.inner_text("body")
            cells = [row.split("\t") for row in page.locator("table tr").all_inner_texts()]
        finally:
            browser.close()
    for ratio in ("1.0189", "0.0683", "0.5397"):
        assert ratio in body, f"{ratio} not on the rendered Compare page (screenshot: {shot})"
    cells = [[c.strip() for c in row] for row in cells]
    assert ["passed", "54", "53", "1.0189"] in cells
    assert ["ratio", "1", "0.0683", "0.5397"] in cells
    assert shot.stat().st_size > 10_000


def test_a_page_opened_directly_on_a_fresh_server_goes_through_the_router(dashboard_url):
    """A bookmarked page URL, first visitor after a restart: still the app's navigation and store panel (a pages/
    directory would be served on its own then, without them)."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} not found: run `make test`, or `apt-get install -y chromium`")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1400})
            page.goto(dashboard_url + "runs", wait_until="domcontentloaded")
            page.get_by_role("button", name="Refresh").wait_for(timeout=60_000)  # the router's sidebar
            sidebar = page.locator("[data-testid=stSidebar]").inner_text()
        finally:
            browser.close()
    assert "Store:" in sidebar
    for title in ("Compare", "Trends", "Problems", "Runs", "Alerts"):
        assert title in sidebar
