"""One file -> text, by type, with the libraries made for each format (pypdf, python-docx, openpyxl, python-pptx,
selectolax, the standard library's email and csv). Why not one converter for all: each format fails its own way
(an encrypted PDF, a scan without a text layer, a corrupt archive), and the user must be told which and why."""

from __future__ import annotations

import email
import email.policy
import io
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TEXT_SUFFIXES = {
    ".txt", ".md", ".markdown", ".rst", ".csv", ".tsv", ".json", ".jsonl", ".ndjson", ".xml", ".yaml", ".yml",
    ".toml", ".ini", ".cfg", ".log", ".py", ".js", ".ts", ".java", ".go", ".rs", ".c", ".h", ".cpp", ".hpp", ".sh",
    ".sql", ".tex", ".srt", ".vtt",
}  # fmt: skip
CONVERTED_SUFFIXES = {".pdf", ".docx", ".xlsx", ".xlsm", ".pptx", ".html", ".htm", ".eml"}
CONVERTER_VERSION = "1"  # part of the cache key: bump when a converter's output changes


class Unreadable(Exception):
    """The file holds no text we can get at; the message says why, in words a user can act on."""


@dataclass
class Converted:
    text: str
    kind: str  # pdf, docx, xlsx, pptx, html, eml, text
    parts: dict[str, Any] = field(default_factory=dict)  # pages, sheets or slides, when the format has them


def needs_conversion(path: Path) -> bool:
    return path.suffix.lower() in CONVERTED_SUFFIXES


def convert(path: Path) -> Converted:
    """The file's text; raises `Unreadable`. Only for `needs_conversion` files: text files are read as they are."""
    suffix = path.suffix.lower()
    data = path.read_bytes()
    try:
        if suffix == ".pdf":
            return _pdf(data)
        if suffix == ".docx":
            return _docx(data)
        if suffix in (".xlsx", ".xlsm"):
            return _xlsx(data)
        if suffix == ".pptx":
            return _pptx(data)
        if suffix in (".html", ".htm"):
            return Converted(html_text(data.decode("utf-8", errors="replace")), "html")
        if suffix == ".eml":
            return _eml(data)
    except (Unreadable, ImportError):
        raise  # an ImportError is our installation, not the user's file: never cached as unreadable
    except zipfile.BadZipFile as exc:
        raise Unreadable(f"corrupt {suffix[1:].upper()} file (not a valid Office archive)") from exc
    except Exception as exc:  # every parser raises its own kinds for a damaged file
        raise Unreadable(f"corrupt or unsupported {suffix[1:].upper()} file: {type(exc).__name__}: {exc}") from exc
    raise Unreadable(f"no converter for {suffix or 'files without a suffix'}")


def _pdf(data: bytes) -> Converted:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
    except PdfReadError as exc:
        raise Unreadable(f"corrupt PDF: {exc}") from exc
    if reader.is_encrypted:
        # Many PDFs are encrypted with an empty user password (they only restrict printing or copying).
        try:
            opened = reader.decrypt("")
        except Exception as exc:  # an unsupported algorithm (AES without `cryptography`) or a damaged dictionary
            raise Unreadable(f"encrypted PDF that cannot be opened: {exc}") from exc
        if not opened:
            raise Unreadable("encrypted PDF: it needs a password")
    pages = [page.extract_text() or "" for page in reader.pages]
    if not any(p.strip() for p in pages):
        raise Unreadable(f"PDF without a text layer ({len(pages)} pages; a scan needs OCR first)")
    text = "\n\n".join(f"[page {i}]\n{p.strip()}" for i, p in enumerate(pages, 1))
    return Converted(text, "pdf", {"pages": len(pages)})


def _docx(data: bytes) -> Converted:
    import docx

    document = docx.Document(io.BytesIO(data))
    lines = [p.text for p in document.paragraphs]
    for table in document.tables:
        lines += [" | ".join(cell.text.strip() for cell in row.cells) for row in table.rows]
    text = "\n".join(lines).strip()
    if not text:
        raise Unreadable("DOCX with no text")
    return Converted(text, "docx", {"paragraphs": len(document.paragraphs), "tables": len(document.tables)})


def _xlsx(data: bytes) -> Converted:
    import openpyxl

    book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    sheets = []
    for sheet in book.worksheets:
        rows = ["\t".join("" if v is None else str(v) for v in row) for row in sheet.iter_rows(values_only=True)]
        rows = [r for r in rows if r.strip()]
        sheets.append(f"[sheet {sheet.title}]\n" + "\n".join(rows))
    book.close()
    text = "\n\n".join(sheets)
    if not text.replace("[sheet", "").strip():
        raise Unreadable("spreadsheet with no cells")
    return Converted(text, "xlsx", {"sheets": [s.title for s in book.worksheets]})


def _pptx(data: bytes) -> Converted:
    import pptx

    deck = pptx.Presentation(io.BytesIO(data))
    slides, found = [], False
    for i, slide in enumerate(deck.slides, 1):
        texts = [shape.text_frame.text for shape in slide.shapes if shape.has_text_frame and shape.text_frame.text]
        found = found or any(t.strip() for t in texts)
        slides.append(f"[slide {i}]\n" + "\n".join(texts))
    if not found:
        raise Unreadable("presentation with no text")
    return Converted("\n\n".join(slides), "pptx", {"slides": len(slides)})


BLOCKS = "p|div|h[1-6]|li|tr|table|section|article|header|footer|blockquote|pre|dt|dd"
BLOCK_END = re.compile(rf"(?i)(</(?:{BLOCKS})>|<br\s*/?>)")
CELL_END = re.compile(r"(?i)</t[dh]>")


def html_text(html: str) -> str:
    """Visible text of a page, one line per block (paragraph, heading, list item, table row); scripts, styles and
    markup dropped. Inline tags (<b>, <a>) stay inside their line."""
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(CELL_END.sub("\\g<0>\t", BLOCK_END.sub("\\g<0>\n", html)))
    for node in tree.css("script, style, noscript, template"):
        node.decompose()
    title = tree.css_first("title")
    body = tree.body or tree.root
    text = body.text(separator="") if body is not None else ""
    lines = [" ".join(line.split()) for line in text.splitlines()]
    joined = "\n".join(line for line in lines if line)
    if title is not None and title.text().strip() and not joined.startswith(title.text().strip()):
        joined = f"{title.text().strip()}\n{joined}"
    return joined


def _eml(data: bytes) -> Converted:
    message = email.message_from_bytes(data, policy=email.policy.default)
    headers = [f"{name}: {message[name]}" for name in ("From", "To", "Cc", "Date", "Subject") if message[name]]
    body = message.get_body(preferencelist=("plain", "html"))
    text = ""
    if body is not None:
        content = body.get_content()
        text = html_text(content) if body.get_content_type() == "text/html" else content
    attachments = [part.get_filename() for part in message.iter_attachments() if part.get_filename()]
    if attachments:
        headers.append("Attachments: " + ", ".join(attachments))
    if not headers and not text.strip():
        raise Unreadable("email with no headers or text")
    return Converted("\n".join(headers) + "\n\n" + text.strip(), "eml", {"attachments": len(attachments)})
