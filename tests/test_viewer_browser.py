"""The viewer of a real run in a real browser: headless Chromium (Debian's, driven by Playwright) finds every turn
and sub-call of the run, expands a sub-call, and saves the screenshot the README shows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rlm_local.synthetic import counting_task

pytestmark = pytest.mark.engine
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "images" / "viewer.png"


def test_the_viewer_page_of_a_real_run_in_headless_chromium(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    assert CHROMIUM.exists(), "Debian's chromium is missing: run `bash scripts/install_browser.sh` (make test does)"
    task = counting_task(5, documents=8, chars_per_document=1_200)
    folder = tmp_path / "inspections"
    folder.mkdir()
    for i, text in enumerate(task.context):
        (folder / f"house-{i:02d}.txt").write_text(text)
    trajectory = tmp_path / "run.jsonl"
    command = [sys.executable, "-m", "rlm_local.cli", "run", "--context", str(folder), "--query", task.query]
    command += ["--sandbox", "docker", "--max-model-len", "4096", "--quiet", "--trajectory", str(trajectory), "--view"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode in (0, 1), done.stderr[-2000:]
    page_path = trajectory.with_suffix(".html")
    assert f"[view: {page_path}]" in done.stderr
    events = [json.loads(line) for line in trajectory.read_text().splitlines()]
    turns = sum(e["event"] == "turn" for e in events)
    subcalls = sum(e["event"] == "subcall" for e in events)
    assert turns >= 1 and subcalls >= 1, "the run made no sub-call to look at"

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"], headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(page_path.as_uri())
        assert page.locator("section.turn").count() >= turns
        assert page.locator("details.subcall").count() == subcalls
        first = page.locator("details.subcall").first
        expect(first.locator("pre.answer")).to_be_hidden()
        first.locator("summary").click()
        expect(first.locator("pre.answer")).to_be_visible()
        expect(first.locator("pre.prompt")).to_be_visible()
        assert page.locator("svg.timeline rect").count() >= turns + subcalls
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT))
        browser.close()
    assert SCREENSHOT.stat().st_size > 10_000
