"""The sandbox interface: something that starts REPL workers, each one connected to the host before it is handed out.

The host binds a Unix socket in a fresh channel folder and only then starts the worker, which connects at boot: the
accepted connection is the worker's "ready", so a pool of started workers waits connected. The socket file and its
folder go as soon as the worker is connected (one connection per worker; nothing of a run is left on disk), and a
worker whose host goes away reads a hang-up and exits. The session (`session.py`) sends the context over that
connection and speaks the protocol; the sandbox only owns the worker's life.
"""

from __future__ import annotations

import abc
import os
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rlm_local.errors import SandboxError

SOCKET_NAME = "host.sock"


@dataclass(eq=False)
class WorkerSlot(abc.ABC):
    """One started worker, connected to the host and waiting for its run."""

    sock: socket.socket  # the worker's connection; the session takes it over

    @abc.abstractmethod
    async def interrupt(self) -> None:
        """Raise KeyboardInterrupt in the running cell (SIGINT)."""

    @abc.abstractmethod
    async def kill(self) -> None:
        """Stop the worker for good and release what it holds; safe to call twice."""

    @abc.abstractmethod
    async def exit_reason(self) -> str | None:
        """Why the worker stopped ('out of memory', 'exit code 1', ...), or None while it runs."""


class Sandbox(abc.ABC):
    """A source of workers; `isolated` says whether model code is kept away from the host."""

    name: str = "sandbox"
    isolated: bool = False

    @abc.abstractmethod
    async def acquire(self, *, label: str = "") -> WorkerSlot:
        """A started worker, connected and ready for one run."""

    async def close(self) -> None:
        """Release every worker this sandbox still holds."""


def listen_in(folder: Path) -> socket.socket:
    """A socket at `folder/host.sock`, listening before the worker starts, that an unprivileged user may connect to."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path = folder / SOCKET_NAME
    listener.bind(str(path))
    os.chmod(path, 0o777)
    listener.listen(1)
    return listener


def accept_worker(
    listener: socket.socket, folder: Path, timeout_s: float, exited: Callable[[], str | None]
) -> socket.socket:
    """Blocking: the worker's connection, or SandboxError when it exits first or does not connect in time.

    The listener and its folder go in any case: nobody else can connect, and nothing stays on disk."""
    deadline = time.monotonic() + timeout_s
    listener.settimeout(0.1)  # to notice a worker that exits before it connects
    try:
        while True:
            try:
                connection = listener.accept()[0]
                connection.settimeout(None)
                return connection
            except TimeoutError:
                pass
            if (reason := exited()) is not None:
                raise SandboxError(f"the REPL worker stopped before it connected ({reason})")
            if time.monotonic() > deadline:
                raise SandboxError(f"the REPL worker did not connect within {timeout_s:g}s")
    finally:
        listener.close()
        shutil.rmtree(folder, ignore_errors=True)
