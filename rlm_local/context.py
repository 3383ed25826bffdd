"""Turning what the user gives (a string, a file, a folder, a list of documents, stdin) into the REPL's `context`.

The context never enters a prompt: it is written to (or left in) a file the worker reads once. Only its shape —
type, total characters, number and lengths of chunks — is described to the root model.
"""

from __future__ import annotations

import codecs
import functools
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from rlm_local.documents import DocumentInfo, DocumentSet, Unreadable, load_folder, read_document
from rlm_local.documents.convert import needs_conversion
from rlm_local.errors import ContextError
from rlm_local.repl.session import ContextFile

READ_BLOCK = 16 * 1024 * 1024
SNIFF_BYTES = 8192
PREVIEW_CHARS = 1_500  # the first message's preview of the data, at most
SAMPLE_CHARS = 150  # shown of one line or item
HEAD_SAMPLES, TAIL_SAMPLES = 3, 2
SAMPLE_KEYS = 10
KEY_CHARS = 40
END_BYTES = 64 * 1024  # read at each end of a text file for its first and last lines
ContextInput = str | os.PathLike[str] | list[str] | dict[str, str] | None


@dataclass
class DataSample:
    """Records from both ends of the context, for the preview: a few lines or items, never the whole of it."""

    unit: str  # "line" or "item"
    count: int
    head: list[tuple[str, str]]  # (label, text)
    tail: list[tuple[str, str]]
    keys: list[str] = field(default_factory=list)


@dataclass
class PreparedContext:
    """The context as a file for the worker, and its shape for the prompt."""

    file: ContextFile
    type_name: str  # the Python type the model will see: str, list, dict
    total_chars: int
    chunk_lengths: list[int] = field(default_factory=list)
    source: str = ""
    owned: bool = False  # we wrote the file and must delete it
    sample: DataSample | None = None  # taken when the value was in memory; text files are sampled when asked
    documents: DocumentSet | None = None  # for folders and converted files: what each file was, what was unreadable

    @property
    def unreadable(self) -> list[dict[str, str]]:
        return self.documents.unreadable_files() if self.documents else []

    def describe(self) -> str:
        """One paragraph for the root model's first message."""
        n = len(self.chunk_lengths)
        if self.type_name == "str":
            return f"`context` is a str of {self.total_chars:,} characters."
        kind = "list of str" if self.type_name == "list" else "dict of str -> str (file path -> text)"
        joined = "'\\n'.join(context)" if self.type_name == "list" else "'\\n'.join(context.values())"
        return (
            f"`context` is a {kind} with {n:,} items, {self.total_chars:,} characters in total; "
            f"item lengths: {_summarise_lengths(self.chunk_lengths)}. It is not a str: `{joined}` gives one str."
        )

    def preview(self, limit: int = PREVIEW_CHARS) -> str:
        """`describe()` plus the first and last lines (or items, and some keys): small models see the data's shape
        before writing a search for it. Each sample is cut, and all of them show at most half the context."""
        if self.sample is None:
            self.sample = _sample_file(self.file)
        sample = self.sample
        if self.type_name == "str":
            plural = "" if sample.count == 1 else "s"
            lines = [f"`context` is a str of {self.total_chars:,} characters in {sample.count:,} line{plural}."]
        else:
            lines = [self.describe()]
        if sample.keys:
            shown = ", ".join(repr(_cut(k, KEY_CHARS)) for k in sample.keys)
            lines.append(f"Keys ({len(sample.keys)} of {sample.count:,}): {shown}")
        cut = min(SAMPLE_CHARS, self.total_chars // (2 * (HEAD_SAMPLES + TAIL_SAMPLES)))
        if cut >= 10 and (sample.head or sample.tail):
            lines.append(f"First and last {sample.unit}s (each cut to {cut} characters):")
            lines += [_sample_line(label, text, cut, sample.unit, from_end=False) for label, text in sample.head]
            if sample.head and sample.tail:
                lines.append("...")
            lines += [_sample_line(label, text, cut, sample.unit, from_end=True) for label, text in sample.tail]
        if self.documents is not None:
            lines.insert(1, self.documents.summary())
        return _fit(lines, limit)

    def metadata(self) -> dict[str, Any]:
        return {
            "type": self.type_name,
            "total_chars": self.total_chars,
            "chunks": len(self.chunk_lengths) or 1,
            "chunk_lengths": self.chunk_lengths[:100],
            "source": self.source,
            **({"unreadable": self.unreadable} if self.unreadable else {}),
            **(
                {"converted": self.documents.converted, "conversion_cache_hits": self.documents.cache_hits}
                if self.documents
                else {}
            ),
        }

    def cleanup(self) -> None:
        if self.owned:
            self.file.path.unlink(missing_ok=True)


def _summarise_lengths(lengths: list[int], show: int = 10) -> str:
    head = ", ".join(f"{n:,}" for n in lengths[:show])
    if len(lengths) <= show:
        return head
    return f"{head}, ... (min {min(lengths):,}, max {max(lengths):,})"


def _cut(text: str, chars: int, *, from_end: bool = False) -> str:
    if len(text) <= chars:
        return text
    return "..." + text[-chars:] if from_end else text[:chars] + "..."


def _sample_line(label: str, text: str, chars: int, unit: str, *, from_end: bool) -> str:
    if unit == "line":
        return f"{label}| {_cut(text, chars, from_end=from_end)}"
    if len(text) <= chars:
        return f"{label} = {text!r}"
    shown = f"...{text[-chars:]!r}" if from_end else f"{text[:chars]!r}..."
    return f"{label} = {shown} ({len(text):,} characters)"


def _fit(lines: list[str], limit: int) -> str:
    """The lines in order, leaving out any that would take the text past `limit` characters."""
    kept: list[str] = []
    size = 0
    for line in lines:
        if size + len(line) + 1 <= limit or not kept:
            kept.append(line[:limit])
            size += len(kept[-1]) + 1
    return "\n".join(kept)


def _value_sample(value: list[str] | dict[str, str]) -> DataSample:
    """The first and last items of a list or dict (references to its strings, not copies), and some keys."""
    if isinstance(value, dict):
        labelled = [(f"context[{key!r}]", str(text)) for key, text in value.items()]
        keys = list(value)[:SAMPLE_KEYS]
    else:
        labelled, keys = [(f"context[{i}]", str(text)) for i, text in enumerate(value)], []
    head, rest = labelled[:HEAD_SAMPLES], labelled[HEAD_SAMPLES:]
    return DataSample("item", len(labelled), head, rest[-TAIL_SAMPLES:], keys)


def _sample_file(file: ContextFile) -> DataSample:
    """The first and last non-empty lines of a text file, read from its two ends: a 1 GB file is only scanned for
    its line count. A JSON file made elsewhere (ours are sampled when written) is loaded."""
    if file.kind == "json":
        with open(file.path, encoding="utf-8") as f:
            return _value_sample(json.load(f))
    size = file.path.stat().st_size
    with open(file.path, "rb") as f:
        if size <= 2 * END_BYTES:
            numbered = list(enumerate(f.read().decode("utf-8", "ignore").splitlines(), 1))
            count = len(numbered)
            numbered = [(n, line) for n, line in numbered if line.strip()]
            head, tail = numbered[:HEAD_SAMPLES], numbered[HEAD_SAMPLES:][-TAIL_SAMPLES:]
        else:
            head_lines = f.read(END_BYTES).decode("utf-8", "ignore").splitlines()
            f.seek(size - END_BYTES)
            tail_lines = f.read().decode("utf-8", "ignore").splitlines()
            tail_lines = tail_lines[1:] or tail_lines  # the first line of the tail is usually partial
            count = _count_lines(f)
            head = [(n, line) for n, line in enumerate(head_lines, 1) if line.strip()][:HEAD_SAMPLES]
            first = count - len(tail_lines) + 1
            tail = [(n, line) for n, line in enumerate(tail_lines, first) if line.strip()][-TAIL_SAMPLES:]
    return DataSample("line", count, [(str(n), t) for n, t in head], [(str(n), t) for n, t in tail])


def _count_lines(f: BinaryIO) -> int:
    """Lines of an open binary file, counted in blocks (a last line without a newline counts)."""
    f.seek(0)
    count, last = 0, b"\n"
    while block := f.read(READ_BLOCK):
        count += block.count(b"\n")
        last = block[-1:]
    return count + (last != b"\n")


def prepare_context(value: ContextInput, workdir: Path | None = None) -> PreparedContext:
    """Validate and materialise a context; raises `ContextError` with a message a user can act on."""
    if value is None:
        raise ContextError("no context given: pass a string, a file, a folder or a list of documents")
    if isinstance(value, os.PathLike):
        return _from_path(Path(value), workdir)
    if isinstance(value, str):
        if not value.strip():
            raise ContextError("the context is empty")
        return _write_json_or_text(value, "str", [len(value)], "string", workdir)
    if isinstance(value, list):
        docs = [d if isinstance(d, str) else json.dumps(d, ensure_ascii=False) for d in value]
        if not docs or not any(d.strip() for d in docs):
            raise ContextError("the context is an empty list of documents")
        return _write_json_or_text(docs, "list", [len(d) for d in docs], f"list of {len(docs)}", workdir)
    if isinstance(value, dict):
        docs = {str(k): v if isinstance(v, str) else json.dumps(v, ensure_ascii=False) for k, v in value.items()}
        if not docs or not any(v.strip() for v in docs.values()):
            raise ContextError("the context is an empty mapping of documents")
        lengths = [len(v) for v in docs.values()]
        return _write_json_or_text(docs, "dict", lengths, f"dict of {len(docs)}", workdir)
    raise ContextError(f"unsupported context type {type(value).__name__}: use str, a path, list[str] or dict")


@functools.cache
def private_dir() -> Path:
    """A folder only this user can enter, for contexts given as values (they may be private data)."""
    return Path(tempfile.mkdtemp(prefix="rlm-local-"))


def _write_json_or_text(
    value: str | list[str] | dict[str, str], type_name: str, lengths: list[int], source: str, workdir: Path | None
) -> PreparedContext:
    kind = "text" if isinstance(value, str) else "json"
    suffix = ".txt" if kind == "text" else ".json"
    fd, name = tempfile.mkstemp(prefix="rlm-context-", suffix=suffix, dir=workdir or private_dir())
    os.fchmod(fd, 0o644)  # readable by the sandbox user through a hard link; the folder itself is private
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        if isinstance(value, str):
            f.write(value)
        else:
            json.dump(value, f, ensure_ascii=False)
    sample = None if isinstance(value, str) else _value_sample(value)
    return PreparedContext(
        ContextFile(Path(name), kind), type_name, sum(lengths), lengths, source=source, owned=True, sample=sample
    )


def _from_path(path: Path, workdir: Path | None) -> PreparedContext:
    path = path.expanduser()
    if not path.exists():
        raise ContextError(f"context file not found: {path}")
    if path.is_dir():
        return _from_folder(path, workdir)
    if needs_conversion(path):
        return _from_document(path, workdir)
    chars = count_text_chars(path)
    if chars == 0:
        raise ContextError(f"the context file is empty: {path}")
    # A UTF-8 text file is used as it is: no copy, whatever its size.
    return PreparedContext(ContextFile(path.resolve(), "text"), "str", chars, [chars], source=str(path))


def _from_folder(folder: Path, workdir: Path | None) -> PreparedContext:
    found = load_folder(folder)
    prepared = _write_json_or_text(found.docs, "dict", [len(v) for v in found.docs.values()], str(folder), workdir)
    prepared.documents = found
    return prepared


def _from_document(path: Path, workdir: Path | None) -> PreparedContext:
    """A single PDF, DOCX, ... becomes a str context."""
    try:
        converted, cached = read_document(path)
    except Unreadable as exc:
        raise ContextError(f"the context file cannot be read: {path}: {exc}") from exc
    if not converted.text.strip():
        raise ContextError(f"the context file has no text: {path}")
    prepared = _write_json_or_text(converted.text, "str", [len(converted.text)], str(path), workdir)
    info = DocumentInfo(path.name, converted.kind, len(converted.text), converted.parts, cached)
    prepared.documents = DocumentSet({path.name: converted.text}, [info], converted=not cached, cache_hits=cached)
    return prepared


def count_text_chars(path: Path) -> int:
    """Characters in a UTF-8 text file, read in blocks; raises `ContextError` for binary or non-UTF-8 files."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    chars = 0
    try:
        with open(path, "rb") as f:
            first = True
            while block := f.read(READ_BLOCK):
                if first and b"\x00" in block[:SNIFF_BYTES]:
                    raise ContextError(f"the context file looks binary (it contains NUL bytes): {path}")
                first = False
                chars += len(decoder.decode(block))
            chars += len(decoder.decode(b"", final=True))
    except UnicodeDecodeError as exc:
        raise ContextError(f"the context file is not UTF-8 text ({exc.reason} at byte {exc.start}): {path}") from exc
    except PermissionError as exc:
        raise ContextError(f"the context file cannot be read (permission denied): {path}") from exc
    except IsADirectoryError as exc:
        raise ContextError(f"expected a file: {path}") from exc
    return chars
