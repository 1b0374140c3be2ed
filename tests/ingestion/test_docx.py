"""DOCX: paragraphs and tables in order, heading styles as sections, ZIP bombs refused unread."""

from __future__ import annotations

import os
import re

import docx
import pytest

from ingestion.config import IngestionConfig
from ingestion.document import ParsedDocument
from ingestion.errors import DocumentTooLargeError, ParseError
from ingestion.parsers import DOCX, parse
from tests.ingestion.samples import add_zip_entry, docx_bytes, make_docx, make_zip


def parse_docx(data: bytes, **limits: int) -> ParsedDocument:
    return parse(data, media_type=DOCX, filename="report.docx", config=IngestionConfig(**limits))


def report() -> bytes:
    document = docx.Document()
    document.add_heading("Harbour Survey 2024", level=0)
    document.add_paragraph("Prepared for the port authority.")
    document.add_heading("Findings", level=1)
    finding = document.add_paragraph("Silt depth rose by ")
    finding.add_run("40 cm").bold = True
    finding.add_run(" at berth 3.")
    finding.add_run().add_break()
    finding.add_run("Dredging is due\tin spring.")
    table = document.add_table(rows=3, cols=3)
    for row, values in enumerate([["Berth", "Depth", "Change"], ["1", "9.2 m", "-0.1"]]):
        for column, value in enumerate(values):
            table.cell(row, column).text = value
    merged = table.cell(2, 0).merge(table.cell(2, 2))
    merged.text = "Berth 2 closed for repairs"
    document.add_heading("Method", level=2)
    document.add_paragraph("Multibeam sonar, 12 transects.")
    document.add_heading("Next steps", level=1)
    document.add_paragraph("Survey again in 2025.")
    return docx_bytes(document)


def test_paragraphs_and_tables_are_read_in_order() -> None:
    doc = parse_docx(report())
    assert doc.media_type == DOCX
    assert doc.text == (
        "Harbour Survey 2024\n\n"
        "Prepared for the port authority.\n\n"
        "Findings\n\n"
        "Silt depth rose by 40 cm at berth 3.\nDredging is due in spring.\n\n"
        "Berth | Depth | Change\n1 | 9.2 m | -0.1\nBerth 2 closed for repairs\n\n"
        "Method\n\n"
        "Multibeam sonar, 12 transects.\n\n"
        "Next steps\n\n"
        "Survey again in 2025."
    )


def test_heading_styles_become_sections_under_the_title() -> None:
    doc = parse_docx(report())
    assert [s.path for s in doc.sections] == [
        ("Harbour Survey 2024",),
        ("Harbour Survey 2024", "Findings"),
        ("Harbour Survey 2024", "Findings", "Method"),
        ("Harbour Survey 2024", "Next steps"),
    ]
    title, findings, method, next_steps = doc.sections
    assert doc.text[findings.start :].startswith("Findings\n")
    assert findings.end == method.end == next_steps.start
    assert title.end == len(doc.text)


def test_title_is_the_core_property_else_the_title_paragraph_else_heading_1() -> None:
    document = docx.Document()
    document.core_properties.title = "Official Title"
    document.add_heading("Styled title", level=0)
    document.add_paragraph("text")
    assert parse_docx(docx_bytes(document)).title == "Official Title"
    assert parse_docx(make_docx(["text"], title="Styled title")).title == "Styled title"
    document = docx.Document()
    document.add_heading("First chapter", level=1)
    document.add_paragraph("text")
    assert parse_docx(docx_bytes(document)).title == "First chapter"
    assert parse_docx(make_docx(["just text"])).title is None


def test_nested_tables_are_read_in_place() -> None:
    document = docx.Document()
    outer = document.add_table(rows=1, cols=2)
    outer.cell(0, 0).text = "left"
    inner = outer.cell(0, 1).add_table(rows=1, cols=2)
    inner.cell(0, 0).text = "inner a"
    inner.cell(0, 1).text = "inner b"
    assert parse_docx(docx_bytes(document)).text == "left\ninner a | inner b"


def test_an_entry_that_inflates_too_far_is_refused_naming_the_limit() -> None:
    # 50 MiB of zeros deflate to about 50 KiB: a ratio near 1000.
    bomb = add_zip_entry(make_docx(["innocent"]), "word/media/image1.bin", bytes(50 * 1024**2))
    assert len(bomb) < 200_000
    with pytest.raises(DocumentTooLargeError) as caught:
        parse_docx(bomb)
    message = str(caught.value)
    assert "'word/media/image1.bin'" in message
    assert "the limit is 200 (SHOAL_INGESTION__MAX_COMPRESSION_RATIO)" in message


def test_small_parts_that_compress_well_are_not_bombs() -> None:
    padded = add_zip_entry(make_docx(["fine"]), "word/padding.xml", bytes(512 * 1024))
    assert parse_docx(padded).text == "fine"


def test_more_unzipped_bytes_than_the_limit_is_refused_naming_the_limit() -> None:
    # Random bytes do not compress: the total is what trips, not the ratio.
    big = add_zip_entry(make_docx(["text"]), "word/media/photo.bin", os.urandom(2 * 1024**2))
    assert parse_docx(big).text == "text"
    with pytest.raises(DocumentTooLargeError) as caught:
        parse_docx(big, max_unzipped_mb=1)
    assert re.fullmatch(
        r"DOCX unpacks to \d MiB; the limit is 1 MiB \(SHOAL_INGESTION__MAX_UNZIPPED_MB\)",
        str(caught.value),
    )


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"PK\x03\x04 then garbage", "not a ZIP archive"),
        (b"", "not a ZIP archive"),
        (make_zip({"mimetype": b"application/epub+zip", "OEBPS/a.xhtml": b"<p/>"}), "no word"),
        (make_zip({"word/document.xml": b"<not-word/>"}), "."),
    ],
    ids=["garbage", "empty", "another-zip", "no-content-types"],
)
def test_bytes_that_are_not_a_word_document_are_refused(data: bytes, reason: str) -> None:
    with pytest.raises(ParseError, match=f"not a valid DOCX: .*{reason}"):
        parse_docx(data)


def test_a_document_with_no_text_is_refused() -> None:
    with pytest.raises(ParseError, match="no text"):
        parse_docx(docx_bytes(docx.Document()))
