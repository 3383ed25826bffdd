"""The sandbox's set-up and upkeep, not the run path: whether the image is built from these sources, building it,
and removing containers whose host died before it could start them (`rlm-local sandbox gc`).

The image is `sandbox/Dockerfile` with the REPL worker; an image built here carries the sha256 of those two files as a
label, so that one built from another version of the worker is reported as outdated.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import socket
import subprocess
import sys
import tarfile
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlm_local.docker_host import LABEL, LABEL_HOST, LABEL_PID, docker_client, is_not_found, short_error
from rlm_local.errors import SandboxError

log = logging.getLogger(__name__)

DEFAULT_IMAGE = "rlm-local-sandbox:latest"
DEFAULT_BASE_IMAGE = "python:3.12-slim"  # the Dockerfile's default, for hosts that can reach a registry
OFFLINE_BASE_IMAGE = "rlm-local-base:bookworm"  # built by scripts/build_sandbox_image.sh with debootstrap
WORKER_PATH = "/opt/rlm/repl_worker.py"  # where sandbox/Dockerfile puts the worker
LABEL_DIGEST = "rlm-local.source-digest"
_PACKAGE_DIR = Path(__file__).resolve().parent
# What the sandbox image is built from, in digest order (scripts/build_sandbox_image.sh hashes the same files).
SANDBOX_FILES = ("Dockerfile", "repl_worker.py", "rlm_helpers.py", "seccomp_filter.py")


def worker_script() -> Path:
    """The worker is `sandbox/repl_worker.py`; wheels carry a copy inside the package."""
    for candidate in (_PACKAGE_DIR / "_sandbox" / "repl_worker.py", _PACKAGE_DIR.parent / "sandbox" / "repl_worker.py"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("the REPL worker sandbox/repl_worker.py is missing from this installation")


def sandbox_dir() -> Path:
    """The folder holding the Dockerfile and the worker."""
    return worker_script().parent


BUILD_HINT = "build it with `rlm-local sandbox build` (or `bash scripts/build_sandbox_image.sh`)"


def source_digest(directory: Path | None = None) -> str | None:
    """sha256 of the sandbox files in order: the label a sandbox image built from these sources carries.

    The same digest is computed by scripts/build_sandbox_image.sh; None if the Dockerfile is not installed.
    """
    directory = directory or sandbox_dir()
    try:
        data = b"".join((directory / name).read_bytes() for name in SANDBOX_FILES)
    except OSError:
        return None
    return hashlib.sha256(data).hexdigest()


def image_status(image: str = DEFAULT_IMAGE, client: Any = None) -> str:
    """'missing', 'outdated' (built by `build_image` from another worker or Dockerfile), or 'ok'."""
    client = client or docker_client()
    try:
        attrs = client.api.inspect_image(image)
    except Exception as exc:
        if is_not_found(exc):
            return "missing"
        raise SandboxError(f"cannot inspect the sandbox image {image}: {short_error(exc)}") from exc
    expected = source_digest()
    built_from = ((attrs.get("Config") or {}).get("Labels") or {}).get(LABEL_DIGEST)
    if expected is not None and built_from is not None and built_from != expected:
        return "outdated"
    return "ok"  # an image built by hand (`docker build sandbox/`) has no digest label: taken as it is


def require_image(image: str, client: Any) -> None:
    """SandboxError saying how to build the image when it is missing or was built from another REPL worker."""
    status = image_status(image, client)
    if status == "missing":
        raise SandboxError(f"the sandbox image {image} is missing: {BUILD_HINT}")
    if status == "outdated":
        raise SandboxError(
            f"the sandbox image {image} was built from another version of the REPL worker: rebuild it with "
            "`rlm-local sandbox build` (or `bash scripts/build_sandbox_image.sh`)"
        )


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
    client = docker_client(timeout=600)
    directory = sandbox_dir()
    digest = source_digest(directory)
    if digest is None:
        raise SandboxError(f"the sandbox Dockerfile is missing from this installation ({directory})")
    if not force and image_status(image, client) == "ok":
        say(f"{image} is up to date")
        return image
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name in SANDBOX_FILES:
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
            f"building the sandbox image {image} on {base_image} failed ({short_error(exc)}); without a registry, "
            "build it with `bash scripts/build_sandbox_image.sh` (debootstrap)"
        ) from exc
    say(f"built {image}")
    return image


def _owner_alive(labels: dict[str, str]) -> bool:
    pid = labels.get(LABEL_PID, "")
    return pid.isdigit() and int(pid) > 0 and Path(f"/proc/{pid}").exists()


def gc_containers(*, all: bool = False, client: Any = None) -> list[str]:
    """Remove sandbox containers whose owner process is gone (every sandbox container with `all=True`): those left
    in `Created` by a host that died between creating and starting one. Another host's containers are left alone
    unless `all` is set. Returns the removed names."""
    client = client or docker_client()
    removed, here = [], socket.gethostname()
    for info in client.api.containers(all=True, filters={"label": f"{LABEL}=1"}):
        labels = info.get("Labels") or {}
        if not all and (labels.get(LABEL_HOST, here) != here or _owner_alive(labels)):
            continue
        name = (info.get("Names") or ["/" + info["Id"][:12]])[0].lstrip("/")
        try:
            client.api.remove_container(info["Id"], force=True)
        except Exception as exc:
            if not is_not_found(exc):
                log.warning("cannot remove sandbox container %s: %s", name, short_error(exc))
                continue
        removed.append(name)
    return removed
