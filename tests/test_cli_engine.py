"""The CLI on the real engine: a stopped run leaves no engine process and no container behind. (A quiet run's stdout,
the answer alone, is checked with its `--view` page in tests/test_viewer_browser.py: one engine start for both.)"""

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


def _containers_of(pid: int) -> list[str]:
    import docker

    return [c.name for c in docker.from_env().containers.list(all=True) if c.name.startswith(f"rlm-local-{pid}-")]


@pytest.mark.parametrize(
    ("how", "sandbox"),
    [
        ("SIGTERM to the CLI, as a job runner sends it", "process"),
        ("Ctrl-C: SIGINT to the process group", "docker"),
        ("SIGTERM while the engine starts", "process"),
    ],
)
def test_a_stopped_run_exits_130_leaving_no_engine_process_and_no_container(tmp_path, how, sandbox):
    """A `rlm-local run` stopped mid-run (or while its engine starts) leaves no vLLM process and no sandbox
    container, exit code 130, and no traceback."""
    context = tmp_path / "context.txt"
    context.write_text(needle_task(4, chars=60_000).context)
    trajectory = tmp_path / "run.jsonl"
    command = [sys.executable, "-m", "rlm_local.cli", "run", "--context", str(context), "--query", "What is it?"]
    command += ["--sandbox", sandbox, "--max-model-len", "4096", "--quiet", "--trajectory", str(trajectory)]
    cli = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        started = (lambda: any("VLLM" in p for p in _session_processes(cli.pid))) if "starts" in how else None
        while not (started() if started else trajectory.exists() and "run_start" in trajectory.read_text()):
            assert cli.poll() is None, cli.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the run did not start"
            time.sleep(0.2)
        assert any("VLLM" in p for p in _session_processes(cli.pid)), "the engine is not running"
        while sandbox == "docker" and not _containers_of(cli.pid) and time.monotonic() < deadline:
            assert cli.poll() is None, cli.stderr.read().decode()[-2000:]  # the container starts with the first cell
            time.sleep(0.2)
        assert sandbox != "docker" or _containers_of(cli.pid), "the run has no sandbox container"
        if how.startswith("SIGTERM"):
            cli.send_signal(signal.SIGTERM)
        else:
            os.killpg(cli.pid, signal.SIGINT)
        assert cli.wait(timeout=120) == 130
        # Ctrl-C reaches vLLM's engine processes too, whose workers die mid-step: what they say goes to the engine
        # log, and the user reads our one line.
        stderr = cli.stderr.read().decode()
        assert stderr.strip().endswith("rlm-local: interrupted"), stderr[-3000:]
        for noise in ("Traceback", "Exception ignored", "Task was destroyed", "ERROR", "EngineCore"):
            assert noise not in stderr, stderr[-3000:]
        deadline = time.monotonic() + 30
        while _session_processes(cli.pid) and time.monotonic() < deadline:
            time.sleep(1)
        assert _session_processes(cli.pid) == []
        assert _containers_of(cli.pid) == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(cli.pid, signal.SIGKILL)
