"""The Docker engine as the sandbox and its set-up see it: a client that answers, the labels that say which host owns
a container, and the engine's errors in one line. The SDK is imported on first use, so `--sandbox process` runs
without it."""

from __future__ import annotations

import os
import socket
from typing import Any

from rlm_local.errors import SandboxError

__all__ = ["ENGINE_HINT", "LABEL", "LABEL_HOST", "LABEL_PID", "docker_available", "docker_client", "owner_labels"]

LABEL, LABEL_PID, LABEL_HOST = "rlm-local.sandbox", "rlm-local.owner-pid", "rlm-local.owner-host"
ENGINE_HINT = (
    "start it with `sudo systemctl start docker` (or `sudo dockerd &`), or use `--sandbox process` "
    "for development (not isolated)"
)


def docker_client(timeout: float = 60.0) -> Any:
    """A Docker client that answers a ping, or SandboxError saying how to start an engine (or that the SDK is
    missing)."""
    try:
        import docker
    except ImportError as exc:
        raise SandboxError("the Docker SDK for Python is missing: pip install docker") from exc
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except Exception as exc:
        raise SandboxError(f"the Docker engine does not answer ({short_error(exc)}): {ENGINE_HINT}") from exc
    return client


def docker_available(timeout: float = 2.0) -> bool:
    """Whether a Docker engine answers a ping within `timeout` seconds."""
    try:
        docker_client(timeout).close()
        return True
    except SandboxError:
        return False


def short_error(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_not_found(exc: BaseException) -> bool:
    """docker.errors.NotFound and its subclasses (ImageNotFound), or any 404 from the engine."""
    status = getattr(getattr(exc, "response", None), "status_code", None)
    return status == 404 or any(cls.__name__ == "NotFound" for cls in type(exc).__mro__)


def owner_labels() -> dict[str, str]:
    return {LABEL: "1", LABEL_PID: str(os.getpid()), LABEL_HOST: socket.gethostname()}
