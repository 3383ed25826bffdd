"""A host killed with SIGKILL in the middle of a cell leaves no container and no channel folder, without `gc`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rlm_local.repl.docker_cleanup import LABEL, LABEL_PID
from rlm_local.repl.docker_client import _client
from rlm_local.repl.sandbox import CONTEXT_NAME

pytestmark = pytest.mark.docker

HOST = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from rlm_local.repl.docker_sandbox import DockerSandbox
    from rlm_local.repl.session import ContextFile, ReplSession

    async def echo(kind, prompts, options):
        return prompts

    async def main():
        context = Path(sys.argv[1])
        sandbox = DockerSandbox(pool_size=0)
        session = ReplSession(sandbox, ContextFile(context), echo, cell_timeout_s=600)
        await session.start()
        print(session._slot.host_dir, flush=True)
        await session.execute("while True: pass")  # runs until the host is killed

    asyncio.run(main())
    """
)


def containers_of(pid: int) -> list[dict]:
    return _client().api.containers(all=True, filters={"label": [f"{LABEL}=1", f"{LABEL_PID}={pid}"]})


def test_sigkill_of_the_host_mid_cell_leaves_no_container_and_no_context_copy(tmp_path: Path) -> None:
    context = tmp_path / "context.txt"
    context.write_text("the context\n" * 1000)
    host = subprocess.Popen([sys.executable, "-c", HOST, str(context)], stdout=subprocess.PIPE, text=True)
    try:
        channel_folder = Path(host.stdout.readline().strip())
        assert channel_folder.is_dir() and containers_of(host.pid), "the session did not start"
        time.sleep(1.0)  # the cell is spinning in the container
        assert (channel_folder / CONTEXT_NAME).exists()
    finally:
        os.kill(host.pid, signal.SIGKILL)
        host.wait()
    deadline = time.monotonic() + 10
    while (containers_of(host.pid) or channel_folder.exists()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert containers_of(host.pid) == [], "the container outlived its killed host"
    assert not channel_folder.exists(), "the context copy outlived its killed host"


def test_the_reaper_leaves_a_live_host_alone_and_ends_with_it(tmp_path: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3)"])
    watcher = subprocess.Popen([sys.executable, "-m", "rlm_local.repl.reaper", "--owner", str(sleeper.pid)])
    time.sleep(1.5)
    assert watcher.poll() is None  # still waiting: its owner lives
    sleeper.wait()
    assert watcher.wait(timeout=30) == 0  # its owner ended: it swept (nothing) and ended too
