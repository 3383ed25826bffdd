"""Nothing outlives the host: a small watcher process that removes a host's sandbox containers when the host dies.

The host's own cleanup (atexit, SIGTERM / SIGHUP, Ctrl-C) cannot run when it is killed with SIGKILL or by the OOM
killer; its containers then kept running model-written code at their full CPU quota, and its channel folders (with
the context copies) stayed on disk until `rlm-local sandbox gc`. So the first Docker sandbox of a process starts one
reaper in its own session; the reaper waits for that process to end (a pidfd: no polling), then force-removes every
container labelled with its pid and start time, and the channel folders those labels name. After a clean exit it
finds nothing to remove and ends too.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import subprocess
import sys
import threading
import time

from rlm_local.repl.docker_cleanup import LABEL, LABEL_DIR, LABEL_PID, LABEL_START, _process_start, _remove_dir

_started: subprocess.Popen[bytes] | None = None
_lock = threading.Lock()
SETTLE_S = 1.0  # a container whose creation was in flight when the host died appears a moment later


def ensure_started() -> None:
    """One reaper for this process, started the first time a Docker sandbox is prepared."""
    global _started
    with _lock:
        if _started is not None and _started.poll() is None:
            return
        pid = os.getpid()
        command = [sys.executable, "-m", "rlm_local.repl.reaper", "--owner", str(pid), "--start", _process_start(pid)]
        _started = subprocess.Popen(  # kept: the Popen object must outlive this call
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C or a kill of the host's process group does not reach it
            close_fds=True,
        )


def wait_for_exit(pid: int, start: str) -> None:
    """Block until process `pid` (started at `start`, so that a reused pid is not mistaken for it) has ended."""
    if start and _process_start(pid) != start:
        return
    try:
        fd = os.pidfd_open(pid)
    except (OSError, AttributeError):
        while _process_start(pid) == start and start:
            time.sleep(0.5)
        return
    try:
        select.select([fd], [], [])  # readable once the process has ended
    finally:
        os.close(fd)


def sweep(pid: int, start: str) -> list[str]:
    """Force-remove the containers of owner (`pid`, `start`) and the channel folders they name."""
    from rlm_local.repl.docker_client import _client

    api = _client().api
    removed = []
    for info in api.containers(all=True, filters={"label": [f"{LABEL}=1", f"{LABEL_PID}={pid}"]}):
        labels = info.get("Labels") or {}
        if start and labels.get(LABEL_START) not in ("", start):
            continue
        with contextlib.suppress(Exception):
            api.remove_container(info["Id"], force=True)
            removed.append(info["Id"][:12])
        _remove_dir(labels.get(LABEL_DIR), prune=True)
    return removed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--owner", type=int, required=True)
    parser.add_argument("--start", default="")
    args = parser.parse_args(argv)
    wait_for_exit(args.owner, args.start)
    time.sleep(SETTLE_S)
    for _ in range(2):  # twice: a creation that was in flight may land after the first sweep
        with contextlib.suppress(Exception):
            sweep(args.owner, args.start)
        time.sleep(SETTLE_S)
    return 0


if __name__ == "__main__":
    sys.exit(main())
