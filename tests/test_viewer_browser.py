"""The viewer page of a real run (a docs/eval trajectory) in a real browser: headless Chromium (Debian's, driven by
Playwright) finds every turn and sub-call, a sub-call opens on a click, the page's script runs under its own
Content-Security-Policy, and the screenshot the README shows is saved. Never skipped: without Chromium it fails.
Then (`-m engine`) a quiet `rlm-local run --view` on the real engine: the answer alone on stdout, and its page."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlm_local.synthetic import needle_task
from rlm_local.viewer import write_view

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
REAL_RUN = ROOT / "tests/data/multihop_winner_dict_8000_1000.jsonl"
SCREENSHOT = ROOT / "docs/images/viewer.png"


def test_the_viewer_page_of_a_real_run_in_headless_chromium(tmp_path):
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `bash scripts/install_browser.sh` (`make test` does)")
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: `make setup` installs the dev extras")
    events = [json.loads(line) for line in REAL_RUN.read_text().splitlines()]
    turns = sum(e["event"] == "turn" for e in events)
    subcalls = sum(e["event"] == "subcall" for e in events)
    page_path = write_view(REAL_RUN, tmp_path / "run.html")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"], headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("request", lambda r: errors.append(f"request {r.url}") if r.url != page_path.as_uri() else None)
            page.goto(page_path.as_uri())

            assert page.locator("section.turn").count() == turns == 9
            assert page.locator("details.subcall").count() == subcalls == 24
            assert page.locator("details.subcall[open]").count() == 0, "sub-calls start collapsed"
            first = page.locator("#turn-1 details.subcall").first
            expect(first.locator("pre.answer")).to_be_hidden()
            first.locator("summary").click()
            expect(first.locator("pre.prompt")).to_be_visible()
            expect(first.locator("pre.answer")).to_be_visible()
            expect(first.locator("pre.prompt")).to_contain_text(events[1]["prompt_preview"][:40])

            # The page's own script (allowed by its hash): a bar of the timeline opens its sub-call.
            bar = page.locator("svg.timeline a").last
            target = page.locator(f"details{bar.get_attribute('href')}")
            expect(target).not_to_have_attribute("open", "")
            bar.click()
            expect(target).to_have_attribute("open", "")
            page.locator("#expand").click()
            assert page.locator("details.subcall[open]").count() == subcalls
            page.locator("#collapse").click()
            assert page.locator("details.subcall[open]").count() == 0
            assert not errors, errors

            first.locator("summary").click()  # the README's picture: the header and timeline, a sub-call open
            page.evaluate("window.scrollTo(0, 0)")
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT))
        finally:
            browser.close()
    assert SCREENSHOT.stat().st_size > 10_000


@pytest.mark.engine
def test_a_quiet_run_prints_the_answer_alone_and_its_view_shows_every_turn_and_sub_call(tmp_path):
    """`rlm-local run --quiet --view` on the real engine and the Docker sandbox: stdout is the answer alone, stderr
    the page's path and the run's summary line (no engine chatter: vLLM's lines go to the engine log), and the page
    it writes holds every turn and sub-call of the trajectory beside it (the screenshot is left to the test above: a
    stored run gives the same picture every time). One CLI run for both: each starts an engine, a minute on CPU."""
    from playwright.sync_api import expect, sync_playwright

    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: run `bash scripts/install_browser.sh` (`make test` does)"
    task = needle_task(2, chars=20_000)
    context = tmp_path / "context.txt"
    context.write_text(task.context)
    trajectory = tmp_path / "run.jsonl"
    command = [sys.executable, "-m", "rlm_local.cli", "run", "--context", str(context), "--query", task.query]
    command += ["--sandbox", "docker", "--max-model-len", "4096", "--quiet", "--trajectory", str(trajectory), "--view"]
    logs = tmp_path / "logs"
    env = {**os.environ, "RLM_LOCAL_LOG_DIR": str(logs)}
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines() == [done.stdout.strip()]  # one line: the answer, no engine log lines
    assert task.answer in done.stdout
    page_path = trajectory.with_suffix(".html")
    view_line, summary = done.stderr.strip().splitlines()  # no engine chatter, no traceback
    assert view_line == f"[view: {page_path}]" and "turns" in summary, done.stderr[-3000:]
    [engine_log] = logs.glob("engine-*.log")  # vLLM's own lines, its engine processes' included, are kept here
    assert "EngineCore" in engine_log.read_text()
    events = [json.loads(line) for line in trajectory.read_text().splitlines()]
    turns = sum(e["event"] == "turn" for e in events)
    subcalls = sum(e["event"] == "subcall" for e in events)
    assert turns >= 1 and subcalls >= 1, "the run made no sub-call to look at"

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"], headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(page_path.as_uri())
            assert page.locator("section.turn").count() == turns
            assert page.locator("details.subcall").count() == subcalls
            first = page.locator("details.subcall").first
            expect(first.locator("pre.answer")).to_be_hidden()
            first.locator("summary").click()
            expect(first.locator("pre.answer")).to_be_visible()
            expect(first.locator("pre.prompt")).to_be_visible()
        finally:
            browser.close()
