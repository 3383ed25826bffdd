"""rlm-local REPL worker: one persistent Python namespace for a whole RLM run.

This file runs as a plain process (``--sandbox process``) or inside the sandbox container; it must stay
standard-library only and must not import ``rlm_local``.

Protocol (both directions): frames of a 4-byte big-endian length followed by UTF-8 JSON. The host binds its Unix
socket before it starts the worker; the worker connects at boot and says ``hello`` (so a pool of started workers waits
connected), is sent its context as an open file descriptor with ``init``, answers ``ready``, then answers requests one
at a time:

  host -> worker: {"type": "exec", "id": n, "code": str}
                  {"type": "vars"} | {"type": "get_var", "name": str} | {"type": "shutdown"}
  worker -> host: {"type": "exec_result", "id": n, "stdout", "stdout_chars", "stderr", "stderr_chars",
                   "error", "elapsed_s", "final"} | {"type": "vars_result", "vars": [...]}
                  {"type": "var_value", "name", "found", "value", "chars"}

While a cell runs, its code may ask the host for sub-calls; the host owns the models and every budget:

  worker -> host: {"type": "subcall", "id": m, "kind": "llm_query" | "llm_choose" | "rlm_query", "prompts": [...],
                   "options": {...}}
  host -> worker: {"type": "subcall_result", "id": m, "results": [str, ...]}

The context arrives as a file descriptor passed with ``init`` (read once here, then closed), never through the
protocol. A worker whose host goes away (closed, crashed, killed with SIGKILL) sees the socket hang up and exits, even
in the middle of a cell.
"""

from __future__ import annotations

import argparse
import ast
import collections
import contextlib
import io
import json
import os
import select
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # `python -I` leaves the script's folder out
import rlm_helpers
import seccomp_filter

HEADER = struct.Struct(">I")
MAX_FRAME_BYTES = 64 * 1024 * 1024
CAPTURE_KEEP_CHARS = 256 * 1024  # head and tail each: the host shows far less, and needs the true length
VALUE_KEEP_CHARS = 8 * 1024 * 1024
HELPER_NAMES = (
    "llm_query",
    "llm_query_batched",
    "llm_choose",
    "rlm_query",
    "split_text",
    "SHOW_VARS",
    "FINAL",
    "FINAL_VAR",
    *rlm_helpers.HELPER_NAMES,
)
# Names the host pre-imports (a setup cell, with the loop guards on): not the model's variables while unchanged.
PREIMPORTED = {"Counter": collections.Counter, "defaultdict": collections.defaultdict}


class ChannelClosed(Exception):
    """The host went away; the worker exits quietly."""


class Channel:
    """Blocking framed JSON over the host's Unix socket; one request in flight at a time."""

    def __init__(self, path: str) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.connect(path)  # the host listens before this process starts
        self._lock = threading.Lock()
        self._next_id = 0
        self._pid = os.getpid()

    def send(self, message: dict[str, Any]) -> None:
        if os.getpid() != self._pid:  # a copy made by os.fork() in model code: only the worker itself may answer
            os._exit(0)  # (a fork bomb's copies each sent their cell's result, and the host restarted the REPL)
        data = json.dumps(message, ensure_ascii=False, default=str).encode("utf-8", "surrogatepass")
        self._sock.sendall(HEADER.pack(len(data)) + data)

    def recv(self) -> dict[str, Any]:
        return self._frame(self._recv_exact(HEADER.size))

    def recv_with_fds(self) -> tuple[dict[str, Any], list[int]]:
        """A frame and the file descriptors sent with its first byte (the context comes this way)."""
        head, fds, _, _ = socket.recv_fds(self._sock, HEADER.size, 1)
        if not head:
            raise ChannelClosed("host closed the channel")
        return self._frame(head + self._recv_exact(HEADER.size - len(head))), fds

    def _frame(self, head: bytes) -> dict[str, Any]:
        (length,) = HEADER.unpack(head)
        if length > MAX_FRAME_BYTES:
            raise ChannelClosed(f"frame of {length} bytes from host")
        return json.loads(self._recv_exact(length).decode("utf-8", "surrogatepass"))

    def _recv_exact(self, n: int) -> bytes:
        chunks, remaining = [], n
        while remaining > 0:
            chunk = self._sock.recv(min(remaining, 1 << 20))
            if not chunk:
                raise ChannelClosed("host closed the channel")
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

    def subcall(self, kind: str, prompts: list[str], options: dict[str, Any]) -> list[str]:
        """Ask the host to run sub-calls; threads in user code are serialised here."""
        with self._lock:
            self._next_id += 1
            call_id = self._next_id
            self.send({"type": "subcall", "id": call_id, "kind": kind, "prompts": prompts, "options": options})
            reply = self.recv()
        if reply.get("type") != "subcall_result" or reply.get("id") != call_id:
            raise RuntimeError("protocol error: unexpected reply to a sub-call")
        return [str(r) for r in reply["results"]]


def _probabilities(reply: str, choices: list[str]) -> dict[str, float]:
    """The host's JSON list of probabilities, one per choice; an error reply gives each choice the same."""
    try:
        values = json.loads(reply)
    except ValueError:
        values = None
    if not isinstance(values, list) or len(values) != len(choices):
        return {c: 1 / len(choices) for c in choices} if choices else {}
    return {c: float(v) for c, v in zip(choices, values, strict=True)}


class BoundedCapture(io.TextIOBase):
    """A stdout/stderr stand-in that keeps the head and tail and counts every character written."""

    def __init__(self, keep: int = CAPTURE_KEEP_CHARS) -> None:
        self.keep = keep
        self.head: list[str] = []
        self.head_len = 0
        self.tail = ""
        self.total = 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        text = str(text)
        self.total += len(text)
        if self.head_len < self.keep:
            take = text[: self.keep - self.head_len]
            self.head.append(take)
            self.head_len += len(take)
            text = text[len(take) :]
        if text:
            self.tail = (self.tail + text)[-self.keep :]
        return self.total

    def value(self) -> str:
        head = "".join(self.head)
        if self.total <= len(head) + len(self.tail):
            return head + self.tail
        return head + "\n\x00<cut>\x00\n" + self.tail  # marker the host turns into a readable note


def load_context(fds: list[int], kind: str) -> Any:
    """The context from the descriptor the host sent (read-only, closed once read); None without one."""
    if not fds:
        return None
    for extra in fds[1:]:
        os.close(extra)
    with open(fds[0], encoding="utf-8", closefd=True) as f:
        return json.load(f) if kind == "json" else f.read()


def exit_with_host(sock: socket.socket) -> None:
    """A cell may compute for minutes without reading the socket: a thread waits for the host's end of it to hang up
    (the kernel closes it when the host exits, even by SIGKILL) and ends the worker, so that nothing outlives its host
    and Docker removes the container (`auto_remove`)."""
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLRDHUP)

    def watch() -> None:
        while True:
            for _, events in poller.poll():
                if events & (select.POLLRDHUP | select.POLLHUP | select.POLLERR | select.POLLNVAL):
                    os._exit(0)

    threading.Thread(target=watch, name="exit-with-host", daemon=True).start()


def describe_value(value: Any) -> dict[str, Any]:
    size: int | None
    try:
        size = len(value)
    except Exception:
        size = None
    return {"type": type(value).__name__, "size": size}


def short_traceback(exc: BaseException, limit_frames: int = 4) -> str:
    """Only the frames of the cell itself, so the model reads its own mistake and not our plumbing."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == "<cell>"]
    lines = ["Traceback (most recent call last):"]
    for f in frames[-limit_frames:]:
        lines.append(f"  line {f.lineno}, in {f.name}" + (f"\n    {f.line}" if f.line else ""))
    lines.extend(traceback.format_exception_only(type(exc), exc))
    return "\n".join(line.rstrip("\n") for line in lines)


class Worker:
    """Holds the namespace and runs cells in it."""

    def __init__(self, channel: Channel, context: Any) -> None:
        self.channel = channel
        self.final: str | None = None
        self.namespace: dict[str, Any] = {"__name__": "__rlm__", "context": context}
        self._strategies = rlm_helpers.Strategies(self._llm_query_batched, self.namespace, self._llm_choose).helpers()
        self._install_helpers()

    # ---- helpers visible to model code -------------------------------------------------------------------------
    def _llm_query(self, prompt: str, **options: Any) -> str:
        return self.channel.subcall("llm_query", [str(prompt)], options)[0]

    def _llm_query_batched(self, prompts: list[str], **options: Any) -> list[str]:
        prompts = [str(p) for p in prompts]
        return self.channel.subcall("llm_query", prompts, options) if prompts else []

    def _llm_choose(self, prompts: list[str], choices: list[str]) -> list[dict[str, float]]:
        """For each prompt, how likely the sub-model's reply is each of `choices` (they sum to 1): read from one
        token's probabilities, so no reply text has to be parsed."""
        prompts, choices = [str(p) for p in prompts], [str(c) for c in choices]
        replies = self.channel.subcall("llm_choose", prompts, {"choices": choices}) if prompts else []
        return [_probabilities(reply, choices) for reply in replies]

    def _rlm_query(self, query: str, context: Any = None, **options: Any) -> str:
        if context is not None:
            options = {**options, "context": context}
        return self.channel.subcall("rlm_query", [str(query)], options)[0]

    def _show_vars(self) -> None:
        for item in self.list_vars():
            size = f" (len {item['size']})" if item["size"] is not None else ""
            print(f"{item['name']}: {item['type']}{size}")

    def _final(self, answer: Any) -> None:
        self.final = str(answer)

    def _final_var(self, name: Any) -> None:
        if not isinstance(name, str):  # FINAL_VAR(x) with the value itself is forgiven
            self.final = str(name)
            return
        if name not in self.namespace:
            raise NameError(f"FINAL_VAR: no variable named {name!r}")
        self.final = str(self.namespace[name])

    def _install_helpers(self) -> None:
        self.namespace.update(
            llm_query=self._llm_query,
            llm_query_batched=self._llm_query_batched,
            llm_choose=self._llm_choose,
            rlm_query=self._rlm_query,
            split_text=rlm_helpers.split_text,
            SHOW_VARS=self._show_vars,
            FINAL=self._final,
            FINAL_VAR=self._final_var,
            **self._strategies,
        )

    # ---- requests ----------------------------------------------------------------------------------------------
    def execute(self, code: str) -> dict[str, Any]:
        out, err = BoundedCapture(), BoundedCapture()
        self.final = None
        error = None
        started = time.perf_counter()
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = out, err
        try:
            tree = ast.parse(code, "<cell>", "exec")
            last = tree.body[-1] if tree.body else None
            if isinstance(last, ast.Expr):  # echo a trailing expression, as a notebook does
                call = ast.Call(ast.Name("__rlm_echo__", ast.Load()), [last.value], [])
                tree.body[-1] = ast.copy_location(ast.Expr(ast.copy_location(call, last)), last)
                ast.fix_missing_locations(tree)
            self.namespace["__rlm_echo__"] = _echo
            exec(compile(tree, "<cell>", "exec"), self.namespace)
        except BaseException as exc:
            if isinstance(exc, ChannelClosed):
                raise
            error = short_traceback(exc)
        finally:
            sys.stdout, sys.stderr = saved
            self.namespace.pop("__rlm_echo__", None)
            self._install_helpers()  # model code cannot keep a replaced helper
        return {
            "type": "exec_result",
            "stdout": out.value(),
            "stdout_chars": out.total,
            "stderr": err.value(),
            "stderr_chars": err.total,
            "error": error,
            "elapsed_s": time.perf_counter() - started,
            "final": self.final,
        }

    def list_vars(self) -> list[dict[str, Any]]:
        hidden = set(HELPER_NAMES) | {"__name__", "__builtins__"}
        items = []
        for name, value in list(self.namespace.items()):
            if name in hidden or name.startswith("__") or type(value).__name__ == "module":
                continue
            if PREIMPORTED.get(name) is value:
                continue
            items.append({"name": name, **describe_value(value)})
        return items

    def get_var(self, name: str) -> dict[str, Any]:
        if name not in self.namespace or name in HELPER_NAMES:
            return {"type": "var_value", "name": name, "found": False, "value": None, "chars": 0}
        text = str(self.namespace[name])
        return {"type": "var_value", "name": name, "found": True, "value": text[:VALUE_KEEP_CHARS], "chars": len(text)}


def _echo(value: Any) -> None:
    if value is not None:
        print(repr(value))


def handshake(channel: Channel) -> Worker:
    """hello -> init (with the context's descriptor) -> ready; the context is read once."""
    channel.send({"type": "hello", "pid": os.getpid(), "python": sys.version.split()[0]})
    init, fds = channel.recv_with_fds()
    if init.get("type") != "init":
        raise ChannelClosed("expected init")
    context = load_context(fds, str(init.get("context_kind", "text")))
    channel.send({"type": "ready", "context_chars": len(context) if isinstance(context, str) else None})
    return Worker(channel, context)


def serve(worker: Worker) -> None:
    channel = worker.channel
    while True:
        request = channel.recv()
        kind = request.get("type")
        if kind == "exec":
            reply = worker.execute(str(request.get("code", "")))
            reply["id"] = request.get("id")
        elif kind == "vars":
            reply = {"type": "vars_result", "vars": worker.list_vars()}
        elif kind == "get_var":
            reply = worker.get_var(str(request.get("name", "")))
        elif kind == "shutdown":
            return
        else:
            reply = {"type": "error", "message": f"unknown request {kind!r}"}
        channel.send(reply)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True, help="host Unix socket to connect to")
    args = parser.parse_args(argv)
    # The host interrupts a cell with SIGINT. A host started with SIGINT ignored (a background job of a script) hands
    # that on to this process, and every cell timeout would then cost the worker and its variables.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    seccomp_filter.install()  # before any model-written code runs; on failure it says so on stderr and we go on
    with contextlib.suppress(ChannelClosed, ConnectionError, FileNotFoundError, KeyboardInterrupt):
        channel = Channel(args.socket)
        exit_with_host(channel._sock)
        serve(handshake(channel))
    return 0


if __name__ == "__main__":
    sys.exit(main())
