"""Shared test set-up, and the suite-wide check that no sandbox container outlives the tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

SANDBOX_LABEL = "rlm-local.sandbox"


def leftover_sandbox_containers() -> list[str]:
    """Labelled sandbox containers that still exist (running or not)."""
    result = subprocess.run(
        ["docker", "ps", "-a", "--filter", f"label={SANDBOX_LABEL}", "--format", "{{.Names}}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return [name for name in result.stdout.split() if name]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """After the whole suite, killed runs included, no labelled container may be left: that fails the run."""
    if getattr(session.config, "workerinput", None) is not None or session.testscollected == 0:
        return
    leftovers = leftover_sandbox_containers()
    if leftovers:
        print(f"\nFAILED: {len(leftovers)} sandbox container(s) left after the tests: {', '.join(leftovers)}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
