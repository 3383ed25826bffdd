"""Uploaded documents, stored once on disk per tenant and named by id in any number of queries."""

from __future__ import annotations

import json
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from fastapi import HTTPException

from rlm_local.server.auth import Tenant


class DocumentStore:
    """`root/<tenant>/<id>/<filename>` plus `meta.json`; ids are random, so guessing another tenant's is useless."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes

    def save(self, tenant: Tenant, filename: str, data: bytes) -> dict[str, Any]:
        if len(data) > self.max_bytes:
            raise HTTPException(413, f"the document is {len(data):,} bytes; the limit is {self.max_bytes:,}")
        if not data:
            raise HTTPException(400, "the document is empty")
        doc_id = f"doc-{uuid.uuid4().hex[:20]}"
        folder = self.root / tenant.folder / doc_id
        folder.mkdir(parents=True)
        name = _safe_name(filename)
        (folder / name).write_bytes(data)
        meta = {"id": doc_id, "object": "file", "filename": name, "bytes": len(data), "created_at": int(time.time())}
        (folder / "meta.json").write_text(json.dumps(meta))
        return meta

    def path(self, tenant: Tenant, doc_id: str) -> Path:
        meta = self.meta(tenant, doc_id)
        return self.root / tenant.folder / doc_id / meta["filename"]

    def meta(self, tenant: Tenant, doc_id: str) -> dict[str, Any]:
        folder = self.root / tenant.folder / doc_id
        if not re.fullmatch(r"doc-[0-9a-f]{20}", doc_id) or not (folder / "meta.json").exists():
            raise HTTPException(404, f"no document {doc_id!r}")
        return json.loads((folder / "meta.json").read_text())

    def list(self, tenant: Tenant) -> list[dict[str, Any]]:
        folder = self.root / tenant.folder
        metas = [json.loads(p.read_text()) for p in folder.glob("doc-*/meta.json")] if folder.exists() else []
        return sorted(metas, key=lambda m: m["created_at"])

    def delete(self, tenant: Tenant, doc_id: str) -> None:
        self.meta(tenant, doc_id)
        shutil.rmtree(self.root / tenant.folder / doc_id)


def _safe_name(filename: str) -> str:
    """The base name only, in safe characters: an upload names a file, never a path."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", Path(filename or "document.txt").name).lstrip(".")
    return name[:120] or "document.txt"
