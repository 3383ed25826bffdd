"""The CLI on the real engine: a killed run leaves no engine process behind."""

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
