"""`--sandbox docker`: one locked-down container per REPL worker, started ahead of time from a warm pool.

Each container runs the image `rlm-local-sandbox:latest` (see `sandbox/Dockerfile`) with no network at all, a
read-only root filesystem, a small tmpfs for /tmp, no capabilities, no privilege escalation, a non-root user, and
limits on processes, memory (no swap) and CPU. The only thing shared with the host is the run's channel folder,
bind-mounted read-only at /rlm: the host hard-links the context file there and creates its Unix socket there, which
the worker connects to (a Unix socket on a read-only bind mount accepts connections from an unprivileged user).
Never a TCP port, never the Docker socket.

The Docker SDK is blocking: async methods call it through `asyncio.to_thread`, and the warm pool is refilled by one
background thread. Building and checking the image is `docker_image`; the ownership labels, the cleanup of this
process's containers at exit and `gc_containers()` are `docker_cleanup`. The names other code uses
(`docker_available`, `build_image`, `gc_containers`) are re-exported here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlm_local.errors import SandboxError
from rlm_local.repl import reaper
from rlm_local.repl.docker_cleanup import (
    LABEL_DIR,
    _in_parallel,
    _install_cleanup,
    _owner_labels,
    _remove_dir,
    creation_finished,
    forget_container,
    gc_containers,
    register_container,
    registry_lock,
    shutting_down,
)
from rlm_local.repl.docker_client import _client, _is_not_found, _short, docker_available
from rlm_local.repl.docker_image import BUILD_HINT, DEFAULT_IMAGE, WORKER_PATH, build_image, image_status
from rlm_local.repl.sandbox import SOCKET_NAME, Sandbox, WorkerSlot

__all__ = ["DockerSandbox", "DockerSlot", "build_image", "docker_available", "gc_containers"]

log = logging.getLogger(__name__)

CONTAINER_DIR = "/rlm"  # where the channel folder appears inside the container
SANDBOX_USER = "10001:10001"
PROBE_NAME = ".ready.sock"  # the pool's readiness probe, removed from the channel folder before a run

# The container's command. It compiles the worker and imports its modules while the container waits in the pool, so
# that a run starts as soon as the host socket appears (~100 ms of imports saved), then runs it in this process.
# It also waits until the socket is writable for the worker's user: the host binds it and only then makes it
# world-writable, and a worker connecting in between would get EACCES, which it does not retry.
_LAUNCHER = """\
import ast, os, sys, time
worker = sys.argv[1]
with open(worker, encoding="utf-8") as f:
    tree = ast.parse(f.read(), worker)
for node in tree.body:
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
        names = [node.module]
    else:
        continue
    for name in names:
        try:
            __import__(name)
        except Exception:
            pass
code = compile(tree, worker, "exec")
path = sys.argv[sys.argv.index("--socket") + 1]
probe = os.environ.get("RLM_READY_PROBE")
if probe:  # a pool counts this container once the worker is loaded and waiting
    import socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(probe)
    except OSError:
        pass
def writable():  # by its mode bits: os.access answers EROFS on a read-only mount under gVisor
    try:
        st = os.stat(path)
    except OSError:
        return False
    if st.st_uid == os.getuid():
        return bool(st.st_mode & 0o200)
    if st.st_gid in (os.getgid(), *os.getgroups()):
        return bool(st.st_mode & 0o020)
    return bool(st.st_mode & 0o002)
limit = time.monotonic() + float(os.environ.get("RLM_IDLE_LIMIT_S", "86400"))
while not writable():
    if time.monotonic() > limit:
        sys.exit(3)
    time.sleep(0.002)
sys.argv = sys.argv[1:]
exec(code, {"__name__": "__main__", "__file__": worker, "__builtins__": __builtins__})
"""


# ---- slots -----------------------------------------------------------------------------------------------------------
def _describe_exit(state: dict[str, Any]) -> str:
    if state.get("OOMKilled"):
        return "out of memory"
    code = state.get("ExitCode")
    if isinstance(code, int) and code > 128 and (code - 128) in signal.Signals._value2member_map_:
        return f"exit code {code} (killed by {signal.Signals(code - 128).name})"
    return f"exit code {code}"


@dataclass(eq=False)
class DockerSlot(WorkerSlot):
    """One started container; the worker inside waits for the host socket in `host_dir` (seen at /rlm)."""

    name: str = ""
    container_id: str = ""
    started_at: float = 0.0
    sandbox: DockerSandbox | None = field(default=None, repr=False)
    removed: bool = False

    async def interrupt(self) -> None:
        """SIGINT to the container's init, which forwards it to the worker."""
        if self.removed or self.sandbox is None:
            return
        with contextlib.suppress(Exception):  # gone or not running: nothing to interrupt
            await asyncio.to_thread(self.sandbox._api().kill, self.container_id, "SIGINT")

    async def kill(self) -> None:
        """Remove the container (force) and its channel folder; safe to call twice."""
        if self.removed or self.sandbox is None:
            return
        self.removed = True
        await asyncio.to_thread(self.sandbox._remove, self)

    async def exit_reason(self) -> str | None:
        if self.removed or self.sandbox is None:
            return "container removed"
        return await asyncio.to_thread(self._exit_reason, self.sandbox.exit_wait_s)

    def _exit_reason(self, wait_s: float) -> str | None:
        """Asked after a fault: give a dying container a moment to be reported as exited."""
        assert self.sandbox is not None
        api = self.sandbox._api()
        deadline = time.monotonic() + wait_s
        while True:
            try:
                state = api.inspect_container(self.container_id).get("State") or {}
            except Exception as exc:
                return "container removed" if _is_not_found(exc) else None
            if not state.get("Running") and not state.get("Restarting"):
                reason = _describe_exit(state)
                code = state.get("ExitCode")
                if not state.get("OOMKilled") and isinstance(code, int) and 0 < code < 128:
                    reason += self.sandbox._logs_note(self)  # a crash of the worker: its last words help
                return reason
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.025)

    def describe(self) -> str:
        return f"container {self.name}"


# ---- the sandbox -----------------------------------------------------------------------------------------------------
class DockerSandbox(Sandbox):
    """Workers in locked-down containers of `image`; `pool_size` containers are kept started and waiting.

    Limits apply per container: `mem_limit` (no swap), `cpus`, `pids_limit`, and `tmpfs_size` for /tmp (which counts
    towards the memory limit). `runtime="runsc"` runs the containers under gVisor (its runtime must be registered with
    the engine with the runsc flags ``--host-uds=open`` (the worker connects to a host Unix socket) and
    ``--network=none``; see the error raised when it is not). The channel folders are made under
    `root` (a private temp folder by default); put it on the context's filesystem so the context is hard-linked, not
    copied.
    """

    name = "docker"
    isolated = True

    def __init__(
        self,
        image: str = DEFAULT_IMAGE,
        *,
        pool_size: int = 0,
        mem_limit: str | int = "4g",
        cpus: float = 1.0,
        pids_limit: int = 256,
        tmpfs_size: str = "256m",
        runtime: str | None = None,
        user: str = SANDBOX_USER,
        root: str | Path | None = None,
        max_idle_s: float = 3600.0,
        exit_wait_s: float = 0.5,
        ready_timeout_s: float = 60.0,
        check_image: bool = True,
    ) -> None:
        if pool_size < 0:
            raise ValueError("pool_size must be >= 0")
        self.image = image
        self.pool_size = pool_size
        self.mem_limit = mem_limit
        self.cpus = cpus
        self.pids_limit = pids_limit
        self.tmpfs_size = tmpfs_size
        self.runtime = runtime
        self.user = user
        self.max_idle_s = max_idle_s
        self.exit_wait_s = exit_wait_s
        self.ready_timeout_s = ready_timeout_s
        self.check_image = check_image
        self._root_arg = Path(root) if root is not None else None
        self._root: Path | None = None
        self._client: Any = None
        self._lock = threading.Condition()
        self._ready: deque[DockerSlot] = deque()
        self._owned: dict[str, DockerSlot] = {}
        self._starting = 0
        self._closed = False
        self._prepared = False
        self._refill_thread: threading.Thread | None = None
        self._last_error: str | None = None
        self._prepare_lock = threading.Lock()
        _install_cleanup()  # here, as signal handlers can only be set from the main thread

    # ---- setup -------------------------------------------------------------------------------------------------------
    def _api(self) -> Any:
        if self._client is None:
            self._client = _client()
        return self._client.api

    def prepare(self) -> None:
        """Blocking: check the engine, the image and the runtime once; SandboxError saying what to do if not."""
        with self._prepare_lock:
            if not self._prepared:
                self._prepare()

    def _prepare(self) -> None:
        if self._closed:
            raise SandboxError("this Docker sandbox is closed")
        self._api()
        if self.check_image:
            status = image_status(self.image, self._client)
            if status == "missing":
                raise SandboxError(f"the sandbox image {self.image} is missing: {BUILD_HINT}")
            if status == "outdated":
                raise SandboxError(
                    f"the sandbox image {self.image} was built from another version of the REPL worker: rebuild it "
                    "with `rlm-local sandbox build` (or `bash scripts/build_sandbox_image.sh`)"
                )
        if self.runtime:
            runtimes = (self._client.api.info() or {}).get("Runtimes") or {}
            if self.runtime not in runtimes:
                raise SandboxError(
                    f"the container runtime {self.runtime!r} is not registered with the Docker engine (it knows "
                    f"{', '.join(sorted(runtimes)) or 'none'}); for gVisor install runsc and add it to "
                    '/etc/docker/daemon.json as {"runtimes": {"runsc": {"path": "/usr/bin/runsc", '
                    '"runtimeArgs": ["--host-uds=open", "--network=none"]}}}, then reload the engine '
                    "(`sudo systemctl reload docker` or `sudo kill -HUP $(pidof dockerd)`)"
                )
        if self._root_arg is not None:
            self._root_arg.mkdir(parents=True, exist_ok=True)
            self._root = Path(tempfile.mkdtemp(prefix="rlm-docker-", dir=self._root_arg))
        else:
            self._root = Path(tempfile.mkdtemp(prefix="rlm-docker-"))
        _install_cleanup()
        reaper.ensure_started()  # containers and channel folders go even if this process is killed with SIGKILL
        self._prepared = True
        if self.pool_size:
            self._refill_thread = threading.Thread(target=self._refill_loop, name="rlm-docker-pool", daemon=True)
            self._refill_thread.start()

    async def start(self, *, wait: bool = True, timeout_s: float = 120.0) -> None:
        """Check the engine and image and start filling the pool; with `wait`, until it is full."""
        await asyncio.to_thread(self.prepare)
        if wait and self.pool_size:
            await asyncio.to_thread(self._wait_pool_full, timeout_s)

    def _wait_pool_full(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while len(self._ready) < self.pool_size and not self._closed:
                if self._last_error:
                    raise SandboxError(f"the sandbox pool cannot start a container: {self._last_error}")
                left = deadline - time.monotonic()
                if left <= 0:
                    detail = f": {self._last_error}" if self._last_error else ""
                    raise SandboxError(f"the sandbox pool did not fill within {timeout_s:g}s{detail}")
                self._lock.wait(min(left, 0.5))

    def pool_ready(self) -> int:
        """How many started containers wait in the pool now."""
        with self._lock:
            return len(self._ready)

    def owned(self) -> list[str]:
        """Names of the containers this sandbox holds (pool and acquired, not yet removed)."""
        with self._lock:
            return list(self._owned)

    # ---- containers --------------------------------------------------------------------------------------------------
    def _start_container(self, label: str = "", *, wait_ready: bool = False) -> DockerSlot:
        """Blocking: create and start one container (registered for cleanup before it exists).

        With `wait_ready` (the pool), return only once the worker inside is loaded and waiting for a run.
        """
        assert self._root is not None
        host_dir = Path(tempfile.mkdtemp(prefix="rlm-slot-", dir=self._root))
        os.chmod(host_dir, 0o755)  # the container's user must reach the context and the socket
        name = f"rlm-local-{os.getpid()}-{secrets.token_hex(4)}"
        register_container(name, host_dir)
        api = self._api()
        probe: socket.socket | None = None
        environment = {"RLM_IDLE_LIMIT_S": str(int(self.max_idle_s))}
        try:
            if wait_ready:
                probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                probe.bind(str(host_dir / PROBE_NAME))
                os.chmod(host_dir / PROBE_NAME, 0o777)
                probe.listen(1)
                probe.settimeout(0.2)
                environment["RLM_READY_PROBE"] = f"{CONTAINER_DIR}/{PROBE_NAME}"
            labels = {**_owner_labels(), LABEL_DIR: str(host_dir)}
            if label:
                labels["rlm-local.label"] = label[:200]
            host_config = api.create_host_config(
                binds={str(host_dir): {"bind": CONTAINER_DIR, "mode": "ro"}},
                network_mode="none",
                read_only=True,
                tmpfs={"/tmp": f"rw,nosuid,nodev,noexec,size={self.tmpfs_size},mode=1777"},
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                pids_limit=self.pids_limit,
                mem_limit=self.mem_limit,
                memswap_limit=self.mem_limit,
                nano_cpus=int(self.cpus * 1e9),
                ipc_mode="private",
                init=True,
                runtime=self.runtime,
                ulimits=[{"Name": "core", "Soft": 0, "Hard": 0}],
                log_config={"Type": "json-file", "Config": {"max-size": "256k", "max-file": "1"}},
            )
            container = api.create_container(
                self.image,
                name=name,
                entrypoint=["python3", "-I", "-c", _LAUNCHER],
                command=[WORKER_PATH, "--socket", f"{CONTAINER_DIR}/{SOCKET_NAME}", "--wait", "60"],
                user=self.user,
                working_dir="/tmp",
                environment=environment,
                labels=labels,
                host_config=host_config,
                network_disabled=True,
                stdin_open=False,
                tty=False,
            )
            slot = DockerSlot(
                host_dir=host_dir,
                worker_dir=CONTAINER_DIR,
                name=name,
                container_id=container["Id"],
                started_at=time.monotonic(),
                sandbox=self,
            )
            with self._lock:
                self._owned[name] = slot
            api.start(container["Id"])
            if probe is not None:
                self._await_probe(probe, slot)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                api.remove_container(name, force=True)
            _remove_dir(host_dir)
            with registry_lock, self._lock:
                forget_container(name)
                self._owned.pop(name, None)
            if isinstance(exc, SandboxError) or not isinstance(exc, Exception):
                raise
            if _is_not_found(exc):
                raise SandboxError(f"the sandbox image {self.image} is missing: {BUILD_HINT}") from exc
            raise SandboxError(f"cannot start a sandbox container: {_short(exc)}") from exc
        finally:
            if probe is not None:
                probe.close()
                with contextlib.suppress(OSError):
                    os.unlink(host_dir / PROBE_NAME)
            creation_finished()
        return slot

    def _await_probe(self, probe: socket.socket, slot: DockerSlot) -> None:
        """The launcher connects to the probe once the worker is loaded; a container that exits first fails."""
        deadline = time.monotonic() + self.ready_timeout_s
        checked = time.monotonic()
        while True:
            try:
                probe.accept()[0].close()
                return
            except TimeoutError:
                pass
            now = time.monotonic()
            if self._closed or shutting_down():
                raise SandboxError("the sandbox is closing")
            if now > deadline:
                raise SandboxError(
                    f"the sandbox container did not load the worker within {self.ready_timeout_s:g}s"
                    + self._logs_note(slot)
                )
            if now - checked > 1.0:
                checked = now
                reason = slot._exit_reason(0)
                if reason is not None:
                    raise SandboxError(f"the sandbox container stopped ({reason})")

    def _logs_note(self, slot: DockerSlot) -> str:
        """The last lines the container printed (a traceback of the worker, say), for an error message."""
        try:
            text = self._api().logs(slot.container_id, tail=5).decode("utf-8", "replace").strip()
        except Exception:
            return ""
        return f": {_short(text, 400)}" if text else ""

    def _remove(self, slot: DockerSlot) -> None:
        """Blocking: force-remove a container and its channel folder."""
        slot.removed = True
        try:
            self._api().remove_container(slot.container_id or slot.name, force=True)
        except Exception as exc:
            if not _is_not_found(exc) and "already in progress" not in str(exc):
                log.warning("cannot remove sandbox container %s: %s", slot.name, _short(exc))
        _remove_dir(slot.host_dir)
        with registry_lock, self._lock:
            forget_container(slot.name)
            self._owned.pop(slot.name, None)

    def _refill_loop(self) -> None:
        """Background thread: keep `pool_size` containers started; replace those that idled too long."""
        failures = 0
        checked = time.monotonic()
        while True:
            with self._lock:
                if self._closed:
                    return
                stale = self._take_stale()
                need = len(self._ready) + self._starting < self.pool_size
                if not stale and not need:
                    if time.monotonic() - checked < 30:
                        self._lock.wait(30)
                        continue
                    waiting = list(self._ready)
                else:
                    waiting = []
                if need:
                    self._starting += 1
            if waiting:  # every 30 s: a pooled container that stopped (killed from outside, say) is replaced
                checked = time.monotonic()
                dead = [slot for slot in waiting if slot._exit_reason(0) is not None]
                with self._lock:
                    for slot in dead:
                        if slot in self._ready:
                            self._ready.remove(slot)
                            stale.append(slot)
            for slot in stale:
                self._remove(slot)
            if not need:
                continue
            try:
                slot = self._start_container(wait_ready=True)
            except Exception as exc:
                with self._lock:
                    self._starting -= 1
                    self._last_error = _short(exc)
                    self._lock.notify_all()
                failures += 1
                if self._closed or shutting_down():
                    return
                log.warning("sandbox pool: %s", _short(exc))
                with self._lock:
                    if not self._closed:
                        self._lock.wait(min(30.0, 0.5 * 2**failures))
                continue
            failures = 0
            with self._lock:
                self._last_error = None
                self._starting -= 1
                if self._closed:
                    orphan = slot
                else:
                    self._ready.append(slot)
                    orphan = None
                self._lock.notify_all()
            if orphan is not None:
                self._remove(orphan)

    def _take_stale(self) -> list[DockerSlot]:
        """Pool slots whose launcher is about to give up waiting (called with the lock held)."""
        limit = time.monotonic() - max(self.max_idle_s - 60.0, self.max_idle_s / 2)
        stale = [slot for slot in self._ready if slot.started_at < limit]
        for slot in stale:
            self._ready.remove(slot)
        return stale

    # ---- the interface -----------------------------------------------------------------------------------------------
    async def acquire(self, *, label: str = "") -> WorkerSlot:
        """A started container from the pool (instant), or a cold one when the pool is empty."""
        if not self._prepared:
            await asyncio.to_thread(self.prepare)
        if self._closed:
            raise SandboxError("this Docker sandbox is closed")
        slot = None
        with self._lock:
            stale = self._take_stale()
            if self._ready:
                slot = self._ready.popleft()
            self._lock.notify_all()  # the refill thread starts a replacement
        for old in stale:
            await asyncio.to_thread(self._remove, old)
        if slot is not None:
            return slot
        return await asyncio.to_thread(self._start_container, label)

    async def close(self) -> None:
        """Remove every container this sandbox owns, the pool included, and its channel folders."""
        await asyncio.to_thread(self.close_sync)

    def close_sync(self) -> None:
        """Blocking `close()`, for code without an event loop."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        if self._refill_thread is not None:
            self._refill_thread.join(timeout=60)
        with self._lock:
            slots = list(self._owned.values())
            self._ready.clear()
        _in_parallel(self._remove, slots)
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None
