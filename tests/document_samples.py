"""Real documents written with the libraries users' files come from (fpdf2, python-docx, openpyxl, python-pptx,
pypdf for encryption): the loaders are tested on files, not on stubs."""

from __future__ import annotations

from email.message import EmailMessage
from pathlib import Path


def write_pdf(path: Path, pages: list[str]) -> Path:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("Helvetica", size=11)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 6, text)
    pdf.output(str(path))
    return path


def write_encrypted_pdf(path: Path, text: str, password: str = "s3cret") -> Path:
    from pypdf import PdfReader, PdfWriter

    plain = write_pdf(path.with_suffix(".plain.pdf"), [text])
    writer = PdfWriter()
    for page in PdfReader(plain).pages:
        writer.add_page(page)
    writer.encrypt(user_password=password, owner_password=password, algorithm="RC4-128")
    with open(path, "wb") as f:
        writer.write(f)
    plain.unlink()
    return path


def write_docx(path: Path, paragraphs: list[str], table: list[list[str]] | None = None) -> Path:
    import docx

    document = docx.Document()
    for text in paragraphs:
        document.add_paragraph(text)
    if table:
        grid = document.add_table(rows=len(table), cols=len(table[0]))
        for r, row in enumerate(table):
            for c, value in enumerate(row):
                grid.cell(r, c).text = value
    document.save(str(path))
    return path


def write_xlsx(path: Path, sheets: dict[str, list[list[object]]]) -> Path:
    import openpyxl

    book = openpyxl.Workbook()
    book.remove(book.active)
    for title, rows in sheets.items():
        sheet = book.create_sheet(title)
        for row in rows:
            sheet.append(row)
    book.save(str(path))
    return path


def write_pptx(path: Path, slides: list[str]) -> Path:
    import pptx

    deck = pptx.Presentation()
    for text in slides:
        slide = deck.slides.add_slide(deck.slide_layouts[1])
        slide.shapes.title.text = text.split("\n")[0]
        slide.placeholders[1].text = "\n".join(text.split("\n")[1:])
    deck.save(str(path))
    return path


def write_eml(path: Path, subject: str, body: str) -> Path:
    message = EmailMessage()
    message["From"] = "ops@example.org"
    message["To"] = "team@example.org"
    message["Subject"] = subject
    message.set_content(body)
    path.write_bytes(bytes(message))
    return path
