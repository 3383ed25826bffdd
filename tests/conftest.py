"""Shared test set-up, and the suite-wide check that no sandbox container outlives the tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
# Tests send SIGINT to the processes they start. A suite started as a script's background job has SIGINT ignored,
# and every child would inherit that: Python's own handler here makes the children start with the default.
signal.signal(signal.SIGINT, signal.default_int_handler)

from servers import SharedVllmServer  # noqa: E402  (found through the path set above)

SANDBOX_LABEL = "rlm-local.sandbox"
OWNER_PID = "rlm-local.owner-pid"


def leftover_sandbox_containers() -> list[str]:
    """Labelled sandbox containers that still exist (running or not), except those of another live process (a
    second test run or an evaluation on the same machine): a leak is a container whose owner is this process or
    is gone."""
    listing = '{{.Names}} {{.Label "' + OWNER_PID + '"}}'
    result = subprocess.run(
        ["docker", "ps", "-a", "--filter", f"label={SANDBOX_LABEL}", "--format", listing],
        capture_output=True,
        text=True,
        timeout=60,
    )
    leftovers = []
    for line in result.stdout.splitlines():
        name, _, owner = line.partition(" ")
        if name and not (owner.isdigit() and int(owner) != os.getpid() and _alive(int(owner))):
            leftovers.append(name)
    return leftovers


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """After the whole suite, killed runs included, no labelled container may be left: that fails the run."""
    if getattr(session.config, "workerinput", None) is not None or session.testscollected == 0:
        return
    leftovers = leftover_sandbox_containers()
    if leftovers:
        print(f"\nFAILED: {len(leftovers)} sandbox container(s) left after the tests: {', '.join(leftovers)}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedVllmServer]:
    """The OpenAI-compatible server of the test model, shared by the modules that talk to one (started on first
    use, stopped after the suite)."""
    server = SharedVllmServer(tmp_path_factory.mktemp("vllm-server"))
    yield server
    server.stop()
