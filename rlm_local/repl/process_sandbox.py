"""`--sandbox process`: the worker as a plain child process. For development only: it is NOT isolated."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from rlm_local.repl.sandbox import SOCKET_NAME, Sandbox, WorkerSlot, accept_worker, listen_in
from rlm_local.sandbox_image import worker_script


def describe_returncode(code: int | None) -> str | None:
    if code is None:
        return None
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        return f"killed by {name}" + (" (out of memory?)" if -code == signal.SIGKILL else "")
    return f"exit code {code}"


@dataclass(eq=False)
class ProcessSlot(WorkerSlot):
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    async def interrupt(self) -> None:
        if self.process and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGINT)

    async def kill(self) -> None:
        self.sock.close()
        if self.process and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(self.process.wait, 5)

    async def exit_reason(self) -> str | None:
        if self.process is None:
            return None
        with contextlib.suppress(subprocess.TimeoutExpired):  # asked after a fault: give a dying process a moment
            await asyncio.to_thread(self.process.wait, 0.5)
        return describe_returncode(self.process.poll())


class ProcessSandbox(Sandbox):
    """Starts `sandbox/repl_worker.py` with this Python, connected through a socket in a private temp folder."""

    name = "process"
    isolated = False

    def __init__(self, python: str | None = None, root: Path | None = None, connect_timeout_s: float = 60.0) -> None:
        self.python = python or sys.executable
        self.root = root
        self.connect_timeout_s = connect_timeout_s
        self._slots: set[ProcessSlot] = set()

    async def acquire(self, *, label: str = "") -> WorkerSlot:
        return await asyncio.to_thread(self._start, label)

    def _start(self, label: str) -> ProcessSlot:
        folder = Path(tempfile.mkdtemp(prefix=f"rlm-worker-{label}-", dir=self.root))
        listener = listen_in(folder)
        process = subprocess.Popen(
            [self.python, "-u", str(worker_script()), "--socket", str(folder / SOCKET_NAME)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C in the terminal reaches the host, which then stops the worker
        )
        try:
            sock = accept_worker(listener, folder, self.connect_timeout_s, lambda: describe_returncode(process.poll()))
        except BaseException:
            process.kill()
            process.wait()
            raise
        slot = ProcessSlot(sock=sock, process=process)
        self._slots.add(slot)
        return slot

    async def close(self) -> None:
        slots, self._slots = self._slots, set()
        for slot in slots:
            await slot.kill()
