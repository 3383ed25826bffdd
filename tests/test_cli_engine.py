"""The CLI on the real engine: stdout is the answer alone; a killed run leaves no engine process behind."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlm_local.synthetic import needle_task

pytestmark = pytest.mark.engine


def _session_processes(sid: int) -> list[str]:
    """Command lines of the live processes in session `sid` (the CLI and every engine process it started)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == sid and fields[0] != "Z":
                found.append((stat.parent / "cmdline").read_text().replace("\0", " ").strip() or fields[0])
        except (OSError, IndexError, ValueError):
            continue
    return found


def test_sigterm_stops_the_cli_and_its_engine_processes(tmp_path):
    """A `rlm-local run` killed mid-run (SIGTERM, as a job runner sends) leaves no vLLM process, exit code 130."""
    context = tmp_path / "context.txt"
    context.write_text(needle_task(4, chars=60_000).context)
    trajectory = tmp_path / "run.jsonl"
    command = [sys.executable, "-m", "rlm_local.cli", "run", "--context", str(context), "--query", "What is it?"]
    command += ["--sandbox", "process", "--max-model-len", "4096", "--quiet", "--trajectory", str(trajectory)]
    cli = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not (trajectory.exists() and "run_start" in trajectory.read_text()) and time.monotonic() < deadline:
            assert cli.poll() is None, cli.stderr.read().decode()[-2000:]
            time.sleep(0.2)
        assert any("VLLM" in p for p in _session_processes(cli.pid)), "the engine is not running"
        cli.send_signal(signal.SIGTERM)
        assert cli.wait(timeout=120) == 130
        deadline = time.monotonic() + 30
        while _session_processes(cli.pid) and time.monotonic() < deadline:
            time.sleep(1)
        assert _session_processes(cli.pid) == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(cli.pid, signal.SIGKILL)


def test_a_quiet_run_prints_the_answer_alone_on_stdout_and_no_traceback(tmp_path):
    task = needle_task(2, chars=20_000)
    context = tmp_path / "context.txt"
    context.write_text(task.context)
    command = [sys.executable, "-m", "rlm_local.cli", "run", "--context", str(context), "--query", task.query]
    command += ["--sandbox", "docker", "--max-model-len", "4096", "--quiet"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines() == [done.stdout.strip()]  # one line: the answer, no engine log lines
    assert task.answer in done.stdout
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr
    assert "turns" in done.stderr.strip().splitlines()[-1]  # the run's summary line goes to stderr
