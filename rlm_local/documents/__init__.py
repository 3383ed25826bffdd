"""A folder or a file of documents -> `dict` path -> text for the REPL, with what each file was and which could not
be read. Conversion runs on the host, once per file content (cached by hash); the model never sees a file silently
dropped: unreadable files are listed to it and in the run's result."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rlm_local.documents import cache
from rlm_local.documents.convert import CONVERTER_VERSION, Converted, Unreadable, convert, needs_conversion
from rlm_local.errors import ContextError

SNIFF_BYTES = 8192


def _limit(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


@dataclass
class DocumentInfo:
    path: str
    kind: str
    chars: int
    parts: dict[str, Any] = field(default_factory=dict)
    cached: bool = False


@dataclass
class UnreadableFile:
    path: str
    reason: str


@dataclass
class DocumentSet:
    docs: dict[str, str] = field(default_factory=dict)
    info: list[DocumentInfo] = field(default_factory=list)
    unreadable: list[UnreadableFile] = field(default_factory=list)
    converted: int = 0
    cache_hits: int = 0

    def summary(self) -> str:
        """One line for the model: what kinds of documents `context` holds, and what could not be read."""
        kinds = Counter(d.kind for d in self.info)
        pages = sum(d.parts.get("pages", 0) for d in self.info)
        shown = ", ".join(f"{n} {k}" + (f" ({pages} pages)" if k == "pdf" and pages else "") for k, n in kinds.items())
        line = f"Documents read: {shown}."
        if self.unreadable:
            listed = "; ".join(f"{u.path} ({u.reason})" for u in self.unreadable[:5])
            more = f"; and {len(self.unreadable) - 5} more" if len(self.unreadable) > 5 else ""
            line += f" Not readable, so not in `context`: {listed}{more}."
        return line

    def unreadable_files(self) -> list[dict[str, str]]:
        return [asdict(u) for u in self.unreadable]


def read_document(path: Path) -> tuple[Converted, bool]:
    """One file's text and whether it came from the cache; raises `Unreadable`."""
    if not needs_conversion(path):
        return Converted(_read_text(path), "text"), False
    key = cache.file_key(path, CONVERTER_VERSION)
    hit = cache.load(key)
    if hit is not None:
        if "unreadable" in hit:
            raise Unreadable(hit["unreadable"])
        return Converted(hit["text"], hit["kind"], hit.get("parts", {})), True
    try:
        converted = convert(path)
    except Unreadable as exc:
        cache.store(key, {"unreadable": str(exc)})
        raise
    cache.store(key, {"text": converted.text, "kind": converted.kind, "parts": converted.parts})
    return converted, False


def load_folder(folder: Path) -> DocumentSet:
    """Every file under `folder` (hidden files and folders such as .git excluded), sorted by path."""
    max_files = _limit("RLM_LOCAL_MAX_FILES", 10_000)
    max_chars = _limit("RLM_LOCAL_MAX_CONTEXT_CHARS", 1_000_000_000)
    files = _visible_files(folder)
    if len(files) > max_files:
        raise ContextError(
            f"the context folder has {len(files):,} files, more than the limit of {max_files:,}: "
            "give a smaller folder, or raise RLM_LOCAL_MAX_FILES"
        )
    found = DocumentSet()
    total = 0
    for file in files:
        rel = str(file.relative_to(folder))
        try:
            converted, cached = read_document(file)
        except Unreadable as exc:
            found.unreadable.append(UnreadableFile(rel, str(exc)))
            continue
        except OSError as exc:
            found.unreadable.append(UnreadableFile(rel, f"cannot be read: {exc.strerror or exc}"))
            continue
        total += len(converted.text)
        if total > max_chars:
            raise ContextError(
                f"the context folder holds more than {max_chars:,} characters of text (at {rel}): "
                "give a smaller folder, or raise RLM_LOCAL_MAX_CONTEXT_CHARS"
            )
        found.docs[rel] = converted.text
        found.info.append(DocumentInfo(rel, converted.kind, len(converted.text), converted.parts, cached))
        found.converted += converted.kind != "text" and not cached
        found.cache_hits += cached
    if not any(text.strip() for text in found.docs.values()):
        reasons = "; ".join(f"{u.path}: {u.reason}" for u in found.unreadable[:5])
        detail = f" ({reasons})" if reasons else ""
        raise ContextError(f"nothing in the context folder could be read: {folder}{detail}")
    return found


def _visible_files(folder: Path) -> list[Path]:
    """Files under `folder`, sorted; hidden files and folders are left out without being walked (a .git or .venv
    can hold more files than the documents)."""
    found = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(root) / n for n in names if not n.startswith(".")]
    return sorted(p for p in found if p.is_file())


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    if b"\x00" in data[:SNIFF_BYTES]:
        raise Unreadable(f"binary file of a type without a converter ({path.suffix or 'no suffix'})")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Unreadable(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
