"""Who owns a sandbox container, and removing containers whatever way their owner ends.

Every container carries the label ``rlm-local.sandbox=1`` and its owner's pid, start time and host. The containers
this process started are recorded here before they exist and removed at exit, on Ctrl-C and on SIGTERM / SIGHUP;
`gc_containers()` removes those whose owner died without cleaning up (``rlm-local sandbox gc``).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlm_local.errors import SandboxError
from rlm_local.repl.docker_client import _client, _docker_module, _is_not_found, _short

log = logging.getLogger(__name__)

LABEL = "rlm-local.sandbox"
LABEL_PID = "rlm-local.owner-pid"
LABEL_START = "rlm-local.owner-start"
LABEL_HOST = "rlm-local.owner-host"
LABEL_DIR = "rlm-local.host-dir"


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
registry_lock = threading.RLock()  # re-entrant: the SIGTERM handler runs on the main thread, maybe inside a lock
_live: dict[str, str] = {}  # container name -> channel folder, for every container this process has not removed yet
_creating = 0  # container creations in flight
_creating_done = threading.Condition(registry_lock)
_shutting_down = False
_cleanup_installed = False
_signals_installed = False


def register_container(name: str, host_dir: Path) -> None:
    """Record a container about to be created, before it exists; SandboxError (its folder removed) once exiting.

    Every call must be followed by `creation_finished()`, whether the creation worked or not.
    """
    global _creating
    with registry_lock:
        if _shutting_down:
            _remove_dir(host_dir)
            raise SandboxError("the process is exiting")
        _live[name] = str(host_dir)
        _creating += 1


def creation_finished() -> None:
    """A creation announced by `register_container` is over: the exit cleanup need not wait for it any more."""
    global _creating
    with registry_lock:
        _creating -= 1
        _creating_done.notify_all()


def forget_container(name: str) -> None:
    """The container is removed: nothing to do for it at exit."""
    with registry_lock:
        _live.pop(name, None)


def shutting_down() -> bool:
    """Whether the exit cleanup has started: no container may be started any more."""
    return _shutting_down


def _install_cleanup() -> None:
    """atexit once; SIGTERM / SIGHUP handlers once the main thread gets here (where they are still the default)."""
    global _cleanup_installed, _signals_installed
    with registry_lock:
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
    with registry_lock:
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
        forget_container(name)

    _in_parallel(remove, items)
    with contextlib.suppress(Exception):
        client.close()
