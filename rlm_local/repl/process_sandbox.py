"""`--sandbox process`: the worker as a plain child process. For development only: it is NOT isolated."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from rlm_local.repl.sandbox import SOCKET_NAME, Sandbox, WorkerSlot
from rlm_local.repl.worker_files import worker_script


def describe_returncode(code: int) -> str:
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        return f"killed by {name}" + (" (out of memory?)" if -code == signal.SIGKILL else "")
    return f"exit code {code}"


@dataclass(eq=False)
class ProcessSlot(WorkerSlot):
    process: asyncio.subprocess.Process | None = field(default=None, repr=False)
    owns_dir: bool = True

    async def interrupt(self) -> None:
        if self.process and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGINT)

    async def kill(self) -> None:
        if self.process and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.process.wait(), 5)
        if self.owns_dir:
            shutil.rmtree(self.host_dir, ignore_errors=True)

    async def exit_reason(self) -> str | None:
        if self.process is None:
            return None
        with contextlib.suppress(TimeoutError):  # asked after a fault: give a dying process a moment
            await asyncio.wait_for(self.process.wait(), 0.5)
        if self.process.returncode is None:
            return None
        return describe_returncode(self.process.returncode)

    def describe(self) -> str:
        return f"process {self.process.pid if self.process else '?'}"


class ProcessSandbox(Sandbox):
    """Starts `sandbox/repl_worker.py` with this Python; the channel folder is a private temp dir."""

    name = "process"
    isolated = False

    def __init__(self, python: str | None = None, root: Path | None = None) -> None:
        self.python = python or sys.executable
        self.root = root
        self._slots: set[ProcessSlot] = set()

    async def acquire(self, *, label: str = "") -> WorkerSlot:
        host_dir = Path(tempfile.mkdtemp(prefix=f"rlm-worker-{label}-", dir=self.root))
        socket_path = host_dir / SOCKET_NAME
        process = await asyncio.create_subprocess_exec(
            self.python,
            "-u",
            str(worker_script()),
            "--socket",
            str(socket_path),
            "--host-pid",
            str(os.getpid()),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C in the terminal reaches the host, which then stops the worker
        )
        slot = ProcessSlot(host_dir=host_dir, worker_dir=str(host_dir), process=process)
        self._slots.add(slot)
        return slot

    async def close(self) -> None:
        slots, self._slots = self._slots, set()
        for slot in slots:
            await slot.kill()
