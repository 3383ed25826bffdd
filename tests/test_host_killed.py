"""A host killed with SIGKILL in the middle of a cell leaves no container and nothing on disk, without `gc`.

Nothing cleans up after such a host: its worker sees the socket hang up and exits, and Docker removes the container
(`auto_remove`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rlm_local.docker_host import LABEL, LABEL_PID, docker_client

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
        sandbox = DockerSandbox(pool_size=0, root=sys.argv[2])
        session = ReplSession(sandbox, ContextFile(context), echo, cell_timeout_s=600)
        await session.start()
        print(session.context_chars, flush=True)
        await session.execute("while True: pass")  # runs until the host is killed

    asyncio.run(main())
    """
)


def containers_of(pid: int) -> list[dict]:
    return docker_client().api.containers(all=True, filters={"label": [f"{LABEL}=1", f"{LABEL_PID}={pid}"]})


def test_sigkill_of_the_host_mid_cell_leaves_no_container_and_no_context_copy(tmp_path: Path) -> None:
    context = tmp_path / "context.txt"
    context.write_text("the context\n" * 1000)
    channels = tmp_path / "channels"
    command = [sys.executable, "-c", HOST, str(context), str(channels)]
    host = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert host.stdout.readline().strip() == str(len(context.read_text())), "the session did not start"
        assert containers_of(host.pid)
        time.sleep(1.0)  # the cell is spinning in the container
        assert list(channels.iterdir()) == []  # the context went as a descriptor: no copy, no socket file
    finally:
        os.kill(host.pid, signal.SIGKILL)
        host.wait()
    deadline = time.monotonic() + 10
    while containers_of(host.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert containers_of(host.pid) == [], "the container outlived its killed host"
    assert list(channels.iterdir()) == []
