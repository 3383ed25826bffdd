"""The host side of one REPL: runs cells in a worker, serves its sub-calls, survives its faults.

The worker is untrusted. Time limits are kept here (the cell clock stops while the host serves a sub-call),
sub-calls are answered by a host callback that owns every budget, and a worker that hangs, crashes, dies or
sends garbage is replaced by a fresh one, with the loss of state reported in the cell's result.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlm_local.errors import SandboxError
from rlm_local.repl.framing import ProtocolError, encode_frame, read_frame, write_frame
from rlm_local.repl.sandbox import Sandbox, WorkerSlot

SubcallHandler = Callable[[str, list[str], dict[str, Any]], Awaitable[list[str]]]
"""(kind, prompts, options) -> one answer per prompt; kind is 'llm_query', 'llm_choose' or 'rlm_query'."""

SUBCALL_KINDS = ("llm_query", "llm_choose", "rlm_query")
MAX_PROMPTS_PER_SUBCALL = 4096


class StateLost(Exception):
    """The worker failed outside a cell and was replaced: every variable is gone (the message says so)."""


@dataclass
class ContextFile:
    """The context as the worker reads it: a file, plus how to decode it."""

    path: Path
    kind: str = "text"  # "text" -> str, "json" -> list / dict


@dataclass
class CellResult:
    stdout: str = ""
    stdout_chars: int = 0
    stderr: str = ""
    stderr_chars: int = 0
    error: str | None = None
    elapsed_s: float = 0.0
    final: str | None = None
    timed_out: bool = False
    state_lost: bool = False
    fault: str | None = None  # what went wrong with the worker, for the model and the trajectory


class ReplSession:
    """One persistent namespace for one run (restarted on faults, with the context reloaded)."""

    def __init__(
        self,
        sandbox: Sandbox,
        context: ContextFile | None,
        subcalls: SubcallHandler,
        *,
        cell_timeout_s: float = 120.0,
        start_timeout_s: float = 60.0,
        interrupt_grace_s: float = 2.0,
        label: str = "",
    ) -> None:
        self.sandbox, self.context, self.subcalls, self.label = sandbox, context, subcalls, label
        self.cell_timeout_s, self.start_timeout_s, self.interrupt_grace_s = (
            cell_timeout_s,
            start_timeout_s,
            (interrupt_grace_s),
        )
        self.restarts = 0
        self.context_chars: int | None = None
        self._slot: WorkerSlot | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._next_id = 0

    # ---- life ----------------------------------------------------------------------------------------------------
    async def start(self) -> None:
        try:
            await asyncio.wait_for(self._attach(), self.start_timeout_s)
        except (TimeoutError, EOFError, ProtocolError, OSError) as exc:
            reason = await self._slot.exit_reason() if self._slot else None
            await self._detach()
            detail = f" ({reason})" if reason else ""
            raise SandboxError(f"the REPL worker did not start{detail}: {exc or type(exc).__name__}") from exc

    async def _attach(self) -> None:
        self._slot = await self.sandbox.acquire(label=self.label)
        init = {"type": "init", "context_kind": self.context.kind if self.context else "text"}
        # The context goes as an open read-only descriptor: no copy, no file the worker's user must be able to
        # open, nothing left on disk; the worker reads it once and closes it.
        _send_with_context(self._slot.sock, init, self.context)  # a small frame into an empty socket: no wait
        self._reader, self._writer = await asyncio.open_unix_connection(sock=self._slot.sock, limit=1 << 20)
        await self._expect("hello")
        ready = await self._expect("ready")
        self.context_chars = ready.get("context_chars")

    async def _expect(self, kind: str) -> dict[str, Any]:
        assert self._reader is not None
        message = await read_frame(self._reader)
        if message["type"] != kind:
            raise ProtocolError(f"expected {kind!r}, got {message['type']!r}")
        return message

    async def _detach(self) -> None:
        if self._writer is not None:
            self._writer.transport.abort()  # off the event loop's selector now, before the slot closes the socket
        if self._slot is not None:
            await self._slot.kill()
        self._slot = self._reader = self._writer = None

    async def restart(self) -> None:
        self.restarts += 1
        await self._detach()
        await self.start()

    async def close(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await write_frame(self._writer, {"type": "shutdown"})
        await self._detach()

    async def __aenter__(self) -> ReplSession:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- requests ------------------------------------------------------------------------------------------------
    async def execute(self, code: str) -> CellResult:
        """Run one cell; never raises for faults of the worker, which are reported in the result."""
        if self._writer is None:
            await self.start()
        self._next_id += 1
        cell_id = self._next_id
        try:
            await write_frame(self._writer, {"type": "exec", "id": cell_id, "code": code})
            return await self._await_cell(cell_id)
        except (EOFError, ProtocolError, ConnectionError) as exc:
            return await self._replace_worker(f"the worker failed: {exc}")
        except asyncio.CancelledError:
            await self._detach()  # a cancelled run may leave a cell running: do not reuse that worker
            raise

    async def _await_cell(self, cell_id: int) -> CellResult:
        """Frames until the cell's result. The cell clock runs all along, host work on frames included, and stops
        only while the sub-call handler waits for models: frames cannot buy a cell time."""
        compute_left = self.cell_timeout_s
        while True:
            started = time.monotonic()
            try:
                message = await asyncio.wait_for(read_frame(self._reader), max(compute_left, 0.001))
            except TimeoutError:
                return await self._interrupt_cell(cell_id)
            if message["type"] == "exec_result" and message.get("id") == cell_id:
                return _cell_result(message)
            if message["type"] != "subcall":
                raise ProtocolError(f"unexpected {message['type']!r} frame during a cell")
            model_s = await self._serve_subcall(message, started + compute_left)
            compute_left -= time.monotonic() - started - model_s
            if compute_left <= 0:
                return await self._interrupt_cell(cell_id)

    async def _serve_subcall(self, message: dict[str, Any], deadline: float, *, refuse: str | None = None) -> float:
        """Answer one sub-call frame; returns the seconds spent waiting for models. The reply must be read within
        the cell's time: a worker that asks and never reads is a fault, not a host stuck in `drain()`."""
        kind, prompts, options = _validate_subcall(message)
        started = time.monotonic()
        if refuse is not None:
            results = [refuse] * len(prompts)
        else:
            results = await self.subcalls(kind, prompts, options)
        model_s = time.monotonic() - started if prompts and refuse is None else 0.0
        reply = {"type": "subcall_result", "id": message.get("id"), "results": results}
        try:
            await write_frame(self._writer, reply, timeout_s=max(deadline + model_s - time.monotonic(), 0.001))
        except TimeoutError as exc:
            raise ProtocolError("the worker asked for a sub-call and did not read the reply") from exc
        return model_s

    async def _interrupt_cell(self, cell_id: int) -> CellResult:
        """SIGINT first (state is kept if the cell stops), a fresh worker if it does not."""
        assert self._slot is not None
        await self._slot.interrupt()
        deadline = time.monotonic() + self.interrupt_grace_s
        note = f"cell stopped: it ran past its {self.cell_timeout_s:g}s time limit"
        try:
            while (left := deadline - time.monotonic()) > 0:
                message = await asyncio.wait_for(read_frame(self._reader), left)
                if message["type"] == "subcall":
                    await self._serve_subcall(message, deadline, refuse="Error: cell timed out")
                elif message["type"] == "exec_result" and message.get("id") == cell_id:
                    result = _cell_result(message)
                    result.timed_out, result.fault = True, note + "; variables are kept"
                    return result
                else:
                    break
        except (TimeoutError, EOFError, ProtocolError, ConnectionError):
            pass
        result = await self._replace_worker(note + " and did not respond to an interrupt")
        result.timed_out = True
        return result

    async def _replace_worker(self, why: str) -> CellResult:
        reason = await self._slot.exit_reason() if self._slot else None
        if reason:
            why = f"{why} (worker {reason})"
        await self.restart()
        note = f"{why}; the REPL was restarted and all variables were lost (`context` is loaded again)"
        return CellResult(error=note, state_lost=True, fault=note)

    async def list_vars(self) -> list[dict[str, Any]]:
        return (await self._request({"type": "vars"}, "vars_result")).get("vars", [])

    async def get_var(self, name: str) -> str | None:
        reply = await self._request({"type": "get_var", "name": name}, "var_value")
        return reply.get("value") if reply.get("found") else None

    async def _request(self, message: dict[str, Any], reply_type: str) -> dict[str, Any]:
        """A request outside a cell; a worker that fails it is replaced, and `StateLost` says so (the model must
        hear that its variables are gone, not that one of them does not exist)."""
        if self._writer is None:
            await self.start()
        try:
            await write_frame(self._writer, message)
            reply = await asyncio.wait_for(read_frame(self._reader), self.start_timeout_s)
        except (TimeoutError, EOFError, ProtocolError, ConnectionError) as exc:
            result = await self._replace_worker(f"the worker failed while reading a variable: {exc or 'no reply'}")
            raise StateLost(result.fault or "") from exc
        return reply if reply["type"] == reply_type else {}


def _send_with_context(sock: socket.socket, message: dict[str, Any], context: ContextFile | None) -> None:
    """One frame, with the context file's descriptor attached when there is a context."""
    data = encode_frame(message)
    if context is None:
        sock.sendall(data)
        return
    fd = os.open(context.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        sent = socket.send_fds(sock, [data], [fd])
    finally:
        os.close(fd)
    sock.sendall(data[sent:])


def _cell_result(message: dict[str, Any]) -> CellResult:
    """The worker's result, each field of the right type (an untrusted worker's other values are dropped)."""
    texts = {k: v for k in ("stdout", "stderr", "error", "final") if isinstance(v := message.get(k), str)}
    numbers = {
        k: v
        for k in ("stdout_chars", "stderr_chars", "elapsed_s")
        if isinstance(v := message.get(k), int | float) and not isinstance(v, bool)
    }
    return CellResult(
        stdout=texts.get("stdout", ""),
        stdout_chars=int(numbers.get("stdout_chars", len(texts.get("stdout", "")))),
        stderr=texts.get("stderr", ""),
        stderr_chars=int(numbers.get("stderr_chars", len(texts.get("stderr", "")))),
        error=texts.get("error"),
        elapsed_s=float(numbers.get("elapsed_s", 0.0)),
        final=texts.get("final"),
    )


def _validate_subcall(message: dict[str, Any]) -> tuple[str, list[str], dict[str, Any]]:
    kind = message.get("kind")
    prompts = message.get("prompts")
    options = message.get("options") or {}
    if kind not in SUBCALL_KINDS:
        raise ProtocolError(f"unknown sub-call kind {kind!r}")
    if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
        raise ProtocolError("sub-call prompts must be a list of strings")
    if len(prompts) > MAX_PROMPTS_PER_SUBCALL:
        raise ProtocolError(f"sub-call of {len(prompts)} prompts exceeds {MAX_PROMPTS_PER_SUBCALL}")
    if not isinstance(options, dict):
        raise ProtocolError("sub-call options must be an object")
    return kind, prompts, options
