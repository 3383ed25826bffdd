"""Talking to the Docker engine: the SDK, a client that answers, and the small helpers every Docker module shares.

The Docker SDK is imported only when a client is asked for, so that `--sandbox process` works without it.
"""

from __future__ import annotations

from typing import Any

from rlm_local.errors import SandboxError

ENGINE_HINT = (
    "start it with `sudo systemctl start docker` (or `sudo dockerd &`), or use `--sandbox process` "
    "for development (not isolated)"
)


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
