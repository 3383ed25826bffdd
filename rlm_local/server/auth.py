"""Bearer API keys: each key belongs to a tenant, who sees only its own documents and jobs."""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from pathlib import Path

from fastapi import HTTPException, Request

from rlm_local.errors import ConfigError


@dataclass(frozen=True)
class Tenant:
    name: str

    @property
    def cache_salt(self) -> str:
        """vLLM's `cache_salt`: two tenants' identical prompts share no prefix-cache blocks (no timing side channel)."""
        return hashlib.sha256(f"rlm-local tenant {self.name}".encode()).hexdigest()[:32]

    @property
    def folder(self) -> str:
        """A name that is safe as a folder, whatever the tenant is called."""
        return hashlib.sha256(self.name.encode()).hexdigest()[:24]


class ApiKeys:
    """Keys from a file (`TENANT KEY` per line, `#` comments) or `RLM_LOCAL_API_KEYS` (`tenant:key,...`)."""

    def __init__(self, keys: dict[str, str]) -> None:
        self._keys = keys  # key -> tenant name

    @classmethod
    def load(cls, path: Path | None) -> ApiKeys:
        pairs: list[tuple[str, str]] = []
        if path is not None:
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise ConfigError(f"cannot read the API keys file {path}: {exc}") from exc
            for number, line in enumerate(lines, start=1):
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                parts = line.split()
                if len(parts) != 2:
                    raise ConfigError(f"{path}:{number}: expected 'TENANT KEY'")
                pairs.append((parts[0], parts[1]))
        for item in filter(None, os.environ.get("RLM_LOCAL_API_KEYS", "").split(",")):
            tenant, sep, key = item.strip().partition(":")
            if not sep or not tenant or not key:
                raise ConfigError("RLM_LOCAL_API_KEYS: expected 'tenant:key,tenant:key'")
            pairs.append((tenant, key))
        short = [tenant for tenant, key in pairs if len(key) < 16]
        if short:
            raise ConfigError(f"API keys must be at least 16 characters (tenant {short[0]!r})")
        if not pairs:
            raise ConfigError("no API keys: give --api-keys FILE or RLM_LOCAL_API_KEYS (or --no-auth on 127.0.0.1)")
        return cls(dict((key, tenant) for tenant, key in pairs))

    def tenant_of(self, request: Request) -> Tenant:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise HTTPException(401, "missing API key: send 'Authorization: Bearer KEY'")
        for key, tenant in self._keys.items():
            if hmac.compare_digest(key.encode(), token.encode()):
                return Tenant(tenant)
        raise HTTPException(401, "invalid API key")


class NoAuth(ApiKeys):
    """One tenant for everyone: only for a server bound to the loopback interface."""

    def __init__(self) -> None:
        super().__init__({})

    def tenant_of(self, request: Request) -> Tenant:
        return Tenant("local")
