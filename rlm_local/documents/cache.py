"""Converted documents kept by content hash, so a second query over the same folder converts nothing.

The cache holds the user's private text: it lives in this user's cache folder, readable by this user only.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from rlm_local.models import model_cache_dir


def cache_dir() -> Path:
    """``$RLM_LOCAL_DOCUMENT_CACHE`` (say, an encrypted disk), else ``documents/`` in the model cache folder."""
    explicit = os.environ.get("RLM_LOCAL_DOCUMENT_CACHE")
    return Path(explicit).expanduser() if explicit else model_cache_dir() / "documents"


def file_key(path: Path, version: str) -> str:
    """sha256 of the bytes (a renamed or moved file still hits), and of the converter version."""
    digest = hashlib.sha256(version.encode())
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def load(key: str) -> dict[str, Any] | None:
    try:
        return json.loads((cache_dir() / f"{key}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # absent, or a torn write from a killed run: convert again


def store(key: str, entry: dict[str, Any]) -> None:
    """Atomic (write, then rename), so concurrent runs over the same folder never read half an entry."""
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(entry, f, ensure_ascii=False)
        os.replace(tmp, folder / f"{key}.json")
    except OSError:
        pass  # a read-only or full cache only costs a conversion next time
