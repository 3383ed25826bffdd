"""`--sandbox docker`: one locked-down container per REPL worker, connected to the host before a run needs it.

The worker connects to the host's socket at boot and the container runs with `auto_remove`: a host that exits or is
killed (SIGKILL included) closes the socket, the worker exits, Docker removes the container. A container created but
not yet started is the one gap: a SIGTERM closes every sandbox before the process dies, and `rlm-local sandbox gc`
removes what a SIGKILL left in between. The one mount is the channel folder, read-only and empty once the worker is
connected. The SDK blocks: calls run in threads, one thread keeps the warm pool full and one reads the engine's events
(an auto-removed container cannot be inspected once it is gone).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import secrets
import select
import shutil
import signal
import socket
import tempfile
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlm_local.docker_host import docker_client, is_not_found, owner_labels, short_error
from rlm_local.errors import SandboxError
from rlm_local.repl.sandbox import Sandbox, WorkerSlot, accept_worker, listen_in

__all__ = ["DockerSandbox", "DockerSlot"]

log = logging.getLogger(__name__)

CONTAINER_DIR = "/rlm"  # where the channel folder (the host socket, until the worker connects) appears
SANDBOX_USER = "10001:10001"
LABEL_TAG = "rlm-local.sandbox-tag"  # one per sandbox: its events stream sees its own containers only

# The hardening, whatever the limits: no network at all (no TCP to the host, the bridge, the outside, no DNS), a
# read-only root with a small private /tmp, no capabilities, no privilege escalation, a private IPC namespace, no core
# dumps, tini as pid 1 (it forwards the host's SIGINT to the worker and reaps what a cell forks), small logs, and the
# container removed by Docker as soon as the worker exits.
HARDENING: dict[str, Any] = {
    "network_mode": "none",
    "read_only": True,
    "cap_drop": ["ALL"],
    "security_opt": ["no-new-privileges"],
    "ipc_mode": "private",
    "ulimits": [{"Name": "core", "Soft": 0, "Hard": 0}],
    "init": True,
    "log_config": {"Type": "json-file", "Config": {"max-size": "256k", "max-file": "1"}},
    "auto_remove": True,
}
GVISOR_HINT = (
    'for gVisor install runsc and add it to /etc/docker/daemon.json as {"runtimes": {"runsc": {"path": '
    '"/usr/bin/runsc", "runtimeArgs": ["--host-uds=open", "--network=none"]}}}, then reload the engine '
    "(`sudo systemctl reload docker` or `sudo kill -HUP $(pidof dockerd)`)"
)


@dataclass(eq=False)
class DockerSlot(WorkerSlot):
    """One started container whose worker is connected through `sock`."""

    name: str = ""
    container_id: str = ""
    sandbox: DockerSandbox | None = field(default=None, repr=False)
    removed: bool = False

    async def interrupt(self) -> None:
        """SIGINT to the container's init, which forwards it to the worker."""
        if not self.removed and self.sandbox:
            with contextlib.suppress(Exception):  # gone or not running: nothing to interrupt
                await asyncio.to_thread(self.sandbox._api().kill, self.container_id, "SIGINT")

    async def kill(self) -> None:
        if not self.removed and self.sandbox:
            await asyncio.to_thread(self.sandbox._remove, self)

    async def exit_reason(self) -> str | None:
        if self.removed or not self.sandbox:
            return "container removed"
        return await asyncio.to_thread(self.sandbox._exit_reason, self.container_id)


class DockerSandbox(Sandbox):
    """Workers in locked-down containers of `image`; `pool_size` of them are kept started and connected.

    Limits apply per container: `mem_limit` (no swap), `cpus`, `pids_limit`, and `tmpfs_size` for /tmp (which counts
    towards the memory limit). `runtime="runsc"` runs them under gVisor (registered with ``--host-uds=open``, so that
    the worker may connect to a host socket). Channel folders live under `root` (the temp folder by default) until
    their worker connects.
    """

    name = "docker"
    isolated = True

    def __init__(
        self,
        image: str = "rlm-local-sandbox:latest",
        *,
        pool_size: int = 0,
        mem_limit: str | int = "4g",
        cpus: float = 1.0,
        pids_limit: int = 256,
        tmpfs_size: str = "256m",
        runtime: str | None = None,
        user: str = SANDBOX_USER,
        root: str | Path | None = None,
        exit_wait_s: float = 2.0,
        ready_timeout_s: float = 60.0,
        check_image: bool = True,
    ) -> None:
        if pool_size < 0:
            raise ValueError("pool_size must be >= 0")
        self.image, self.pool_size, self.runtime, self.user = image, pool_size, runtime, user
        self.exit_wait_s, self.ready_timeout_s, self.check_image = exit_wait_s, ready_timeout_s, check_image
        self.limits: dict[str, Any] = {
            "mem_limit": mem_limit,
            "memswap_limit": mem_limit,  # no swap
            "nano_cpus": int(cpus * 1e9),
            "pids_limit": pids_limit,
            "tmpfs": {"/tmp": f"rw,nosuid,nodev,noexec,size={tmpfs_size},mode=1777"},
            "runtime": runtime,
        }
        self.root = Path(root) if root is not None else None
        self.tag = secrets.token_hex(6)  # this sandbox's label: its events stream sees its own containers only
        self._client: Any = None
        self._events: Any = None
        self._lock = threading.Condition()
        self._ready: deque[DockerSlot] = deque()
        self._owned: dict[str, DockerSlot] = {}
        self._exits: dict[str, str] = {}  # container id -> why it stopped, from the engine's events
        self._closed = self._prepared = False
        self._last_error: str | None = None
        self._prepare_lock = threading.Lock()
        self._refill_thread: threading.Thread | None = None
        _LIVE.add(self)
        _close_all_on_sigterm()

    def _api(self) -> Any:
        if self._client is None:
            self._client = docker_client()
        return self._client.api

    # ---- setup -------------------------------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Blocking: check the engine, the image and the runtime once; SandboxError saying what to do if not."""
        from rlm_local.sandbox_image import require_image

        with self._prepare_lock:
            if self._closed:
                raise SandboxError("this Docker sandbox is closed")
            if self._prepared:
                return
            api = self._api()
            if self.check_image:
                require_image(self.image, self._client)
            runtimes = (api.info() or {}).get("Runtimes") or {}
            if self.runtime and self.runtime not in runtimes:
                raise SandboxError(
                    f"the container runtime {self.runtime!r} is not registered with the Docker engine (it knows "
                    f"{', '.join(sorted(runtimes)) or 'none'}); {GVISOR_HINT}"
                )
            if self.root is not None:
                self.root.mkdir(parents=True, exist_ok=True)
            # Subscribed before the first container starts, so that no exit is missed.
            self._events = api.events(
                filters={"label": f"{LABEL_TAG}={self.tag}", "event": ["die", "oom"]}, decode=True
            )
            threading.Thread(target=self._watch_exits, name="rlm-docker-events", daemon=True).start()
            if self.pool_size:
                self._refill_thread = threading.Thread(target=self._refill_loop, name="rlm-docker-pool", daemon=True)
                self._refill_thread.start()
            atexit.register(self.close_sync)  # a host that returns or raises removes its containers at once
            self._prepared = True

    async def start(self, *, wait: bool = True, timeout_s: float = 120.0) -> None:
        """Check the engine and image and start filling the pool; with `wait`, until it is full."""
        await asyncio.to_thread(self.prepare)
        deadline = time.monotonic() + timeout_s
        while wait and self.pool_ready() < self.pool_size and not self._closed:
            if self._last_error or time.monotonic() > deadline:
                why = self._last_error or f"it did not fill within {timeout_s:g}s"
                raise SandboxError(f"the sandbox pool cannot start a container: {why}")
            await asyncio.sleep(0.05)

    def pool_ready(self) -> int:
        """How many started containers wait in the pool now."""
        with self._lock:
            return len(self._ready)

    def owned(self) -> list[str]:
        """Names of the containers this sandbox holds (pool and acquired, not yet removed)."""
        with self._lock:
            return list(self._owned)

    # ---- containers --------------------------------------------------------------------------------------------------
    def _start_container(self, label: str = "") -> DockerSlot:
        """Blocking: listen, create and start one container, and take its worker's connection."""
        folder = Path(tempfile.mkdtemp(prefix="rlm-slot-", dir=self.root))
        os.chmod(folder, 0o755)  # the container's user must reach the socket
        listener = listen_in(folder)
        name = f"rlm-local-{os.getpid()}-{secrets.token_hex(4)}"
        labels = {**owner_labels(), LABEL_TAG: self.tag, "rlm-local.label": label[:200]}
        api, container_id = self._api(), ""
        try:
            host_config = api.create_host_config(
                binds={str(folder): {"bind": CONTAINER_DIR, "mode": "ro"}}, **HARDENING, **self.limits
            )
            container_id = api.create_container(
                self.image, name=name, user=self.user, labels=labels, host_config=host_config, network_disabled=True
            )["Id"]
            api.start(container_id)

            def exited() -> str | None:
                return self._exits.get(container_id) or ("the sandbox is closing" if self._closed else None)

            sock = accept_worker(listener, folder, self.ready_timeout_s, exited)
        except BaseException as exc:
            listener.close()
            shutil.rmtree(folder, ignore_errors=True)
            with contextlib.suppress(Exception):
                api.remove_container(container_id or name, force=True)
            if isinstance(exc, SandboxError) or not isinstance(exc, Exception):
                raise
            if is_not_found(exc):
                raise SandboxError(f"the sandbox image {self.image} is missing: `rlm-local sandbox build`") from exc
            raise SandboxError(f"cannot start a sandbox container: {short_error(exc)}") from exc
        slot = DockerSlot(sock=sock, name=name, container_id=container_id, sandbox=self)
        with self._lock:
            self._owned[name] = slot
        return slot

    def _watch_exits(self) -> None:
        """Background thread: why each container stopped ('out of memory' when the engine reported an OOM kill)."""
        oom: set[str] = set()
        with contextlib.suppress(Exception):  # the stream ends when the sandbox closes
            for event in self._events:
                cid, action = event.get("id", ""), event.get("Action") or event.get("status")
                if action == "oom":
                    oom.add(cid)
                    continue
                code = int((event.get("Actor", {}).get("Attributes") or {}).get("exitCode", -1))
                with self._lock:
                    self._exits[cid] = "out of memory" if cid in oom else _describe_exit(code)
                    self._lock.notify_all()

    def _exit_reason(self, container_id: str) -> str | None:
        """Asked after a fault: give a dying container a moment to be reported as stopped."""
        deadline = time.monotonic() + self.exit_wait_s
        with self._lock:
            while container_id not in self._exits and (left := deadline - time.monotonic()) > 0:
                self._lock.wait(left)
            return self._exits.get(container_id)

    def _remove(self, slot: DockerSlot) -> None:
        """Blocking: close the worker's connection and force-remove its container."""
        slot.removed = True
        slot.sock.close()
        try:
            self._api().remove_container(slot.container_id, force=True)
        except Exception as exc:
            if not is_not_found(exc) and "already in progress" not in str(exc):
                log.warning("cannot remove sandbox container %s: %s", slot.name, short_error(exc))
        with self._lock:
            self._owned.pop(slot.name, None)
            self._exits.pop(slot.container_id, None)

    def _refill_loop(self) -> None:
        """Background thread: keep `pool_size` containers started, backing off while they cannot start."""
        failures = 0
        while True:
            with self._lock:
                while not self._closed and len(self._ready) >= self.pool_size:
                    self._lock.wait()
                if self._closed:
                    return
            try:
                slot, self._last_error = self._start_container(), None
                failures = 0
            except Exception as exc:
                slot, self._last_error, failures = None, short_error(exc), failures + 1
                log.warning("sandbox pool: %s", self._last_error)
            with self._lock:
                if slot is not None:
                    self._ready.append(slot)  # close() removes it with the rest if it came too late
                elif not self._closed:
                    self._lock.wait(min(30.0, 0.5 * 2**failures))

    # ---- the interface -----------------------------------------------------------------------------------------------
    async def acquire(self, *, label: str = "") -> WorkerSlot:
        """A connected container from the pool (instant), or a cold one when the pool is empty."""
        if not self._prepared or self._closed:
            await asyncio.to_thread(self.prepare)
        while True:
            with self._lock:
                slot = self._ready.popleft() if self._ready else None
                self._lock.notify_all()  # the refill thread starts a replacement
            if slot is None:
                return await asyncio.to_thread(self._start_container, label)
            if not _hung_up(slot.sock) and slot.container_id not in self._exits:
                return slot
            await asyncio.to_thread(self._remove, slot)  # stopped while pooled (killed from outside, say)

    async def close(self) -> None:
        """Remove every container this sandbox owns, the pool included."""
        await asyncio.to_thread(self.close_sync)

    def close_sync(self) -> None:
        """Blocking `close()`, for code without an event loop (and at exit)."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        if self._refill_thread is not None:  # it finishes the start in flight
            self._refill_thread.join(timeout=60)
        with self._lock:
            slots, self._ready = list(self._owned.values()), deque()
        for slot in slots:
            self._remove(slot)
        if self._events is not None:
            with contextlib.suppress(Exception):
                self._events.close()
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None


_LIVE: weakref.WeakSet[DockerSandbox] = weakref.WeakSet()


def _close_all_on_sigterm() -> None:
    """A host stopped by SIGTERM (`docker stop`, systemd, a CI timeout) runs no atexit hook, and a container it had
    created but not yet started is never auto-removed: close every sandbox first, then die of the signal as before.

    Installed once, from the main thread, and only over the default action (an application's own handler stays)."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def on_sigterm(signum: int, frame: Any) -> None:
        for sandbox in list(_LIVE):
            with contextlib.suppress(Exception):
                sandbox.close_sync()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_sigterm)


def _hung_up(sock: socket.socket) -> bool:
    """Whether the worker's end of the connection has closed (its container stopped while it waited in the pool)."""
    poller = select.poll()
    poller.register(sock, select.POLLRDHUP)  # hang-ups and errors are always reported
    return bool(poller.poll(0))


def _describe_exit(code: int) -> str:
    if code > 128 and (code - 128) in signal.Signals._value2member_map_:
        return f"exit code {code} (killed by {signal.Signals(code - 128).name})"
    return f"exit code {code}"
