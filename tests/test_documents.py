"""Folders of real documents become the REPL's dict context; unreadable files are listed, never dropped silently."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from document_samples import write_docx, write_eml, write_encrypted_pdf, write_pdf, write_pptx, write_xlsx

from rlm_local.context import prepare_context
from rlm_local.documents import load_folder
from rlm_local.documents.convert import html_text
from rlm_local.errors import ContextError


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RLM_LOCAL_DOCUMENT_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def office_folder(tmp_path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    write_pdf(folder / "report.pdf", ["Quarterly report", "The Tilbury warehouse shipped 4,812 pallets."])
    write_encrypted_pdf(folder / "locked.pdf", "Board minutes")
    write_docx(folder / "memo.docx", ["Parking moves to level B."], [["name", "role"], ["Ana", "lead"]])
    write_xlsx(folder / "budget.xlsx", {"2025": [["item", "cost"], ["chairs", 120]], "2026": [["desks", 300]]})
    write_pptx(folder / "deck.pptx", ["Roadmap\nShip the beta in May"])
    (folder / "mail").mkdir()
    write_eml(folder / "mail" / "note.eml", "Lunch", "At noon.")
    (folder / "page.html").write_text("<title>Intranet</title><p>Canteen <b>closed</b> Friday.</p><script>x()</script>")
    (folder / "notes.md").write_text("# Notes\nplain text stays as it is\n")
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref: main")
    return folder


def test_every_format_becomes_text_with_its_structure(office_folder):
    found = load_folder(office_folder)
    assert sorted(found.docs) == [
        "budget.xlsx", "deck.pptx", "mail/note.eml", "memo.docx", "notes.md", "page.html", "report.pdf",
    ]  # fmt: skip
    assert "[page 2]\nThe Tilbury warehouse shipped 4,812 pallets." in found.docs["report.pdf"]
    assert "Ana | lead" in found.docs["memo.docx"]
    assert "[sheet 2026]\ndesks\t300" in found.docs["budget.xlsx"]
    assert "Ship the beta in May" in found.docs["deck.pptx"]
    assert "Subject: Lunch" in found.docs["mail/note.eml"] and "At noon." in found.docs["mail/note.eml"]
    assert found.docs["page.html"] == "Intranet\nCanteen closed Friday."
    kinds = {d.path: (d.kind, d.parts) for d in found.info}
    assert kinds["report.pdf"] == ("pdf", {"pages": 2}) and kinds["budget.xlsx"][1] == {"sheets": ["2025", "2026"]}


def test_unreadable_files_are_listed_to_the_model_and_in_the_metadata(office_folder):
    (office_folder / "broken.docx").write_bytes(b"not an office file")
    (office_folder / "image.bin").write_bytes(b"\x00\x01" * 100)
    prepared = prepare_context(office_folder)
    reasons = {u["path"]: u["reason"] for u in prepared.unreadable}
    assert reasons["locked.pdf"] == "encrypted PDF: it needs a password"
    assert "corrupt DOCX" in reasons["broken.docx"] and "binary" in reasons["image.bin"]
    assert "Not readable, so not in `context`: " in prepared.preview() and "locked.pdf" in prepared.preview()
    assert prepared.metadata()["unreadable"] == prepared.unreadable
    assert "locked.pdf" not in json.loads(prepared.file.path.read_text())


def test_a_second_load_converts_nothing(office_folder):
    first = load_folder(office_folder)
    second = load_folder(office_folder)
    assert (first.converted, first.cache_hits) == (6, 0)  # pdf, docx, xlsx, pptx, eml, html; notes.md is text
    assert (second.converted, second.cache_hits) == (0, 6)
    assert second.docs == first.docs
    assert [u.path for u in second.unreadable] == ["locked.pdf"]  # the verdict is cached too


def test_a_single_pdf_is_a_str_context(office_folder):
    prepared = prepare_context(office_folder / "report.pdf")
    assert prepared.type_name == "str" and "4,812 pallets" in prepared.file.path.read_text()
    assert "Documents read: 1 pdf (2 pages)." in prepared.preview()


def test_clear_errors(tmp_path, office_folder):
    with pytest.raises(ContextError, match="encrypted PDF: it needs a password"):
        prepare_context(office_folder / "locked.pdf")
    nothing = tmp_path / "nothing"
    nothing.mkdir()
    write_encrypted_pdf(nothing / "a.pdf", "x")
    (nothing / "scan.pdf").write_bytes(_blank_pdf())
    with pytest.raises(ContextError, match=r"nothing in the context folder could be read.*a\.pdf: encrypted.*without"):
        prepare_context(nothing)


def test_limits_give_clear_errors(office_folder, monkeypatch):
    monkeypatch.setenv("RLM_LOCAL_MAX_FILES", "3")
    with pytest.raises(ContextError, match="more than the limit of 3: give a smaller folder, or raise"):
        prepare_context(office_folder)
    monkeypatch.setenv("RLM_LOCAL_MAX_FILES", "100")
    monkeypatch.setenv("RLM_LOCAL_MAX_CONTEXT_CHARS", "50")
    with pytest.raises(ContextError, match="more than 50 characters of text"):
        prepare_context(office_folder)


def test_html_keeps_blocks_as_lines_and_drops_scripts():
    page = "<h1>News</h1><p>A <a href='#'>link</a> here.<br>Next</p><ul><li>a</li></ul><style>p{}</style><script>s()"
    assert html_text(page) == "News\nA link here.\nNext\na"


def _blank_pdf() -> bytes:
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()
