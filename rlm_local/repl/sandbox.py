"""The sandbox interface: something that starts REPL workers and can interrupt or kill them.

A worker is started before it knows its run: it waits for the host's socket to appear in its channel folder,
so sandboxes may keep a warm pool. The session (see `session.py`) places the context in that folder, opens the
socket, and speaks the protocol; the sandbox only owns the worker's life.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path

SOCKET_NAME = "host.sock"
CONTEXT_NAME = "context"


@dataclass(eq=False)
class WorkerSlot(abc.ABC):
    """One started worker, waiting for (or attached to) a run."""

    host_dir: Path  # channel folder as the host sees it: the host creates the socket and context here
    worker_dir: str  # the same folder as the worker sees it

    @abc.abstractmethod
    async def interrupt(self) -> None:
        """Raise KeyboardInterrupt in the running cell (SIGINT)."""

    @abc.abstractmethod
    async def kill(self) -> None:
        """Stop the worker for good and release what it holds; safe to call twice."""

    @abc.abstractmethod
    async def exit_reason(self) -> str | None:
        """Why the worker stopped ('out of memory', 'exit code 1', ...), or None while it runs."""

    def describe(self) -> str:
        return type(self).__name__


class Sandbox(abc.ABC):
    """A source of workers; `isolated` says whether model code is kept away from the host."""

    name: str = "sandbox"
    isolated: bool = False

    @abc.abstractmethod
    async def acquire(self, *, label: str = "") -> WorkerSlot:
        """A started worker whose channel folder is empty and ready for one run."""

    async def close(self) -> None:
        """Release every worker this sandbox still holds."""
