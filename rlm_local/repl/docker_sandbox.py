"""`--sandbox docker`: one locked-down container per REPL worker, started ahead of time from a warm pool.

Each container runs the image `rlm-local-sandbox:latest` (see `sandbox/Dockerfile`) with no network at all, a
read-only root filesystem, a small tmpfs for /tmp, no capabilities, no privilege escalation, a non-root user, and
limits on processes, memory (no swap) and CPU. The only thing shared with the host is the run's channel folder,
bind-mounted read-only at /rlm: the host hard-links the context file there and creates its Unix socket there, which
the worker connects to (a Unix socket on a read-only bind mount accepts connections from an unprivileged user).
Never a TCP port, never the Docker socket.

The Docker SDK is blocking: async methods call it through `asyncio.to_thread`, and the warm pool is refilled by one
background thread. Every container carries the label ``rlm-local.sandbox=1`` and its owner's pid; the containers this
process started are removed on close, at exit, on Ctrl-C and on SIGTERM, and `gc_containers()` removes those whose
owner died without cleaning up (``rlm-local sandbox gc``).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import hashlib
import io
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlm_local.errors import SandboxError
from rlm_local.repl.sandbox import SOCKET_NAME, Sandbox, WorkerSlot
from rlm_local.repl.worker_files import sandbox_dir

log = logging.getLogger(__name__)

DEFAULT_IMAGE = "rlm-local-sandbox:latest"
DEFAULT_BASE_IMAGE = "python:3.12-slim"  # the Dockerfile's default, for hosts that can reach a registry
OFFLINE_BASE_IMAGE = "rlm-local-base:bookworm"  # built by scripts/build_sandbox_image.sh with debootstrap
CONTAINER_DIR = "/rlm"  # where the channel folder appears inside the container
WORKER_PATH = "/opt/rlm/repl_worker.py"
SANDBOX_USER = "10001:10001"
PROBE_NAME = ".ready.sock"  # the pool's readiness probe, removed from the channel folder before a run

LABEL = "rlm-local.sandbox"
LABEL_PID = "rlm-local.owner-pid"
LABEL_START = "rlm-local.owner-start"
LABEL_HOST = "rlm-local.owner-host"
LABEL_DIR = "rlm-local.host-dir"
LABEL_DIGEST = "rlm-local.source-digest"

ENGINE_HINT = (
    "start it with `sudo systemctl start docker` (or `sudo dockerd &`), or use `--sandbox process` "
    "for development (not isolated)"
)
BUILD_HINT = "build it with `rlm-local sandbox build` (or `bash scripts/build_sandbox_image.sh`)"

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


# ---- engine ----------------------------------------------------------------------------------------------------------
def _docker_module() -> Any:
    try:
        import docker
    except ImportError as exc:
        raise SandboxError("the Docker SDK for Python is missing: pip install docker") from exc
    return docker


def _client(timeout: float = 60.0) -> Any:
    """A Docker client that answers a ping, or SandboxError saying how to start an engine."""
    docker = _docker_module()
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except Exception as exc:
        raise SandboxError(f"the Docker engine does not answer ({_short(exc)}): {ENGINE_HINT}") from exc
    return client


def docker_available(timeout: float = 2.0) -> bool:
    """Whether a Docker engine answers a ping within `timeout` seconds."""
    try:
        docker = _docker_module()
        client = docker.from_env(timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def _short(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_not_found(exc: BaseException) -> bool:
    """docker.errors.NotFound and its subclasses (ImageNotFound), or any 404 from the engine."""
    return (
        any(cls.__name__ == "NotFound" for cls in type(exc).__mro__)
        or getattr(getattr(exc, "response", None), "status_code", None) == 404
    )


# ---- image -------------------------------------------------------------------------------------------------------
def source_digest(directory: Path | None = None) -> str | None:
    """sha256 of the Dockerfile then the worker: the label a sandbox image built from these sources carries.

    The same digest is computed by scripts/build_sandbox_image.sh; None if the Dockerfile is not installed.
    """
    directory = directory or sandbox_dir()
    try:
        data = (directory / "Dockerfile").read_bytes() + (directory / "repl_worker.py").read_bytes()
    except OSError:
        return None
    return hashlib.sha256(data).hexdigest()


def image_status(image: str = DEFAULT_IMAGE, client: Any = None) -> str:
    """'missing', 'outdated' (built by `build_image` from another worker or Dockerfile), or 'ok'."""
    client = client or _client()
    try:
        attrs = client.api.inspect_image(image)
    except Exception as exc:
        if _is_not_found(exc):
            return "missing"
        raise SandboxError(f"cannot inspect the sandbox image {image}: {_short(exc)}") from exc
    expected = source_digest()
    built_from = ((attrs.get("Config") or {}).get("Labels") or {}).get(LABEL_DIGEST)
    if expected is not None and built_from is not None and built_from != expected:
        return "outdated"
    return "ok"  # an image built by hand (`docker build sandbox/`) has no digest label: taken as it is


def _build_script() -> Path | None:
    package_root = Path(__file__).resolve().parent.parent
    for candidate in (
        package_root.parent / "scripts" / "build_sandbox_image.sh",
        sandbox_dir() / "build_sandbox_image.sh",
    ):
        if candidate.is_file():
            return candidate
    return None


def build_image(
    image: str = DEFAULT_IMAGE,
    *,
    base_image: str | None = None,
    force: bool = False,
    log_line: Callable[[str], None] | None = None,
) -> str:
    """Build the sandbox image (quick when it is up to date) and return its name; `rlm-local sandbox build`.

    With `base_image=None` the base is `rlm-local-base:bookworm`, made without any registry by
    scripts/build_sandbox_image.sh (debootstrap, needs root); give `base_image="python:3.12-slim"` to build on the
    official image instead (pulled when online). Where the script is not installed, the image is built with the SDK on
    `base_image` or python:3.12-slim. Raises SandboxError with the reason and what to do.
    """
    say = log_line or (lambda line: print(line, file=sys.stderr, flush=True))
    script = _build_script()
    if script is not None and shutil.which("docker") and shutil.which("bash"):
        command = ["bash", str(script), "--image", image]
        if base_image:
            command += ["--base", base_image]
        if force:
            command.append("--force")
        env = {**os.environ, "RLM_SANDBOX_DIR": str(sandbox_dir())}
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        tail: deque[str] = deque(maxlen=20)
        assert process.stderr is not None
        for line in process.stderr:
            line = line.rstrip()
            if line:
                tail.append(line)
                say(line)
        process.wait()
        if process.returncode != 0:
            raise SandboxError(f"building the sandbox image {image} failed:\n" + "\n".join(tail))
        return image
    return _build_with_sdk(image, base_image or DEFAULT_BASE_IMAGE, force, say)


def _build_with_sdk(image: str, base_image: str, force: bool, say: Callable[[str], None]) -> str:
    client = _client(timeout=600)
    directory = sandbox_dir()
    digest = source_digest(directory)
    if digest is None:
        raise SandboxError(f"the sandbox Dockerfile is missing from this installation ({directory})")
    if not force and image_status(image, client) == "ok":
        say(f"{image} is up to date")
        return image
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name in ("Dockerfile", "repl_worker.py"):
            tar.add(str(directory / name), arcname=name)
    context.seek(0)
    say(f"building {image} on {base_image}")
    try:
        client.images.build(
            fileobj=context,
            custom_context=True,
            tag=image,
            buildargs={"BASE_IMAGE": base_image},
            labels={LABEL_DIGEST: digest, "rlm-local.base": base_image},
            rm=True,
        )
    except Exception as exc:
        raise SandboxError(
            f"building the sandbox image {image} on {base_image} failed ({_short(exc)}); without a registry, "
            "build it with `bash scripts/build_sandbox_image.sh` (debootstrap)"
        ) from exc
    say(f"built {image}")
    return image


# ---- who owns a container --------------------------------------------------------------------------------------------
def _process_start(pid: int) -> str:
    """The kernel's start time of a process (clock ticks since boot), to tell a reused pid apart; '' if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def _owner_alive(labels: dict[str, str]) -> bool:
    try:
        pid = int(labels.get(LABEL_PID, ""))
    except ValueError:
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    start = labels.get(LABEL_START, "")
    return not start or _process_start(pid) in ("", start)


def _owner_labels() -> dict[str, str]:
    pid = os.getpid()
    return {LABEL: "1", LABEL_PID: str(pid), LABEL_START: _process_start(pid), LABEL_HOST: socket.gethostname()}


def _remove_dir(path: str | Path | None, *, prune: bool = False) -> None:
    """Remove a channel folder (with `prune`, its sandbox root too once empty); only folders named here are touched."""
    if not path:
        return
    path = Path(path)
    if not path.name.startswith("rlm-slot-"):
        return
    shutil.rmtree(path, ignore_errors=True)
    if prune and path.parent.name.startswith("rlm-docker-"):
        with contextlib.suppress(OSError):
            path.parent.rmdir()


def gc_containers(*, all: bool = False, client: Any = None) -> list[str]:
    """Remove sandbox containers whose owner process is gone (every sandbox container with `all=True`).

    Containers owned by a process on another host are left alone unless `all` is set. Returns the removed names.
    """
    client = client or _client()
    removed = []
    here = socket.gethostname()
    for info in client.api.containers(all=True, filters={"label": f"{LABEL}=1"}):
        labels = info.get("Labels") or {}
        if not all and (labels.get(LABEL_HOST, here) != here or _owner_alive(labels)):
            continue
        name = (info.get("Names") or ["/" + info["Id"][:12]])[0].lstrip("/")
        try:
            client.api.remove_container(info["Id"], force=True)
        except Exception as exc:
            if not _is_not_found(exc):
                log.warning("cannot remove sandbox container %s: %s", name, _short(exc))
                continue
        if labels.get(LABEL_HOST, here) == here:
            _remove_dir(labels.get(LABEL_DIR), prune=True)
        removed.append(name)
    return removed


# ---- cleanup of this process's containers, whatever way it ends -----------------------------------------------------
_registry_lock = threading.RLock()  # re-entrant: the SIGTERM handler runs on the main thread, maybe inside a lock
_live: dict[str, str] = {}  # container name -> channel folder, for every container this process has not removed yet
_creating = 0  # container creations in flight
_creating_done = threading.Condition(_registry_lock)
_shutting_down = False
_cleanup_installed = False
_signals_installed = False


def _install_cleanup() -> None:
    """atexit once; SIGTERM / SIGHUP handlers once the main thread gets here (where they are still the default)."""
    global _cleanup_installed, _signals_installed
    with _registry_lock:
        if not _cleanup_installed:
            _cleanup_installed = True
            atexit.register(_cleanup_all)
        if _signals_installed or threading.current_thread() is not threading.main_thread():
            return
        _signals_installed = True
        for signum in (signal.SIGTERM, signal.SIGHUP):
            with contextlib.suppress(ValueError, OSError):
                if signal.getsignal(signum) in (signal.SIG_DFL, None):
                    signal.signal(signum, _on_terminate)


def _on_terminate(signum: int, frame: object) -> None:
    """SIGTERM / SIGHUP: remove our containers, then die of the signal as the default action would."""
    _cleanup_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _in_parallel(function: Callable[[Any], None], items: list[Any]) -> None:
    """Run `function` on every item in threads; one after the other where no thread can start (interpreter exit).

    Not concurrent.futures: it refuses new work once the interpreter is shutting down, when atexit runs.
    """
    threads = [threading.Thread(target=function, args=(item,), daemon=True) for item in items]
    started = 0
    try:
        for thread in threads:
            thread.start()
            started += 1
    except RuntimeError:
        for item in items[started:]:
            function(item)
    for thread in threads[:started]:
        thread.join(60)


def _cleanup_all() -> None:
    """Remove every container this process started and still holds; used at exit and on SIGTERM."""
    global _shutting_down
    with _registry_lock:
        _shutting_down = True
        deadline = time.monotonic() + 10
        while _creating and time.monotonic() < deadline:  # a container being created now is registered when done
            _creating_done.wait(0.1)
        items = list(_live.items())
    if not items:
        return
    try:
        client = _docker_module().from_env(timeout=30)
    except Exception:
        return

    def remove(item: tuple[str, str]) -> None:
        name, host_dir = item
        try:
            client.api.remove_container(name, force=True)
        except Exception as exc:
            if not _is_not_found(exc):
                return
        _remove_dir(host_dir, prune=True)
        with _registry_lock:
            _live.pop(name, None)

    _in_parallel(remove, items)
    with contextlib.suppress(Exception):
        client.close()


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
        global _creating
        assert self._root is not None
        host_dir = Path(tempfile.mkdtemp(prefix="rlm-slot-", dir=self._root))
        os.chmod(host_dir, 0o755)  # the container's user must reach the context and the socket
        name = f"rlm-local-{os.getpid()}-{secrets.token_hex(4)}"
        with _registry_lock:
            if _shutting_down:
                _remove_dir(host_dir)
                raise SandboxError("the process is exiting")
            _live[name] = str(host_dir)
            _creating += 1
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
            with _registry_lock, self._lock:
                _live.pop(name, None)
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
            with _registry_lock:
                _creating -= 1
                _creating_done.notify_all()
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
            if self._closed or _shutting_down:
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
        with _registry_lock, self._lock:
            _live.pop(slot.name, None)
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
                if self._closed or _shutting_down:
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
