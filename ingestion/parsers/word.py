"""DOCX (Word): paragraphs and tables in order, heading styles as sections.

A DOCX is a ZIP of XML parts. Its directory is checked with :mod:`zipfile` before python-docx
inflates anything: a decompression bomb (a few KiB that inflate to gigabytes) is refused by its
declared sizes, which is also all that :mod:`zipfile` will ever inflate.
"""

from __future__ import annotations

import io
import re
import zipfile

import docx
from docx.document import Document
from docx.table import Table
from docx.text.paragraph import Paragraph

from ingestion.config import IngestionConfig
from ingestion.document import ParsedDocument
from ingestion.errors import DocumentTooLargeError, ParseError
from ingestion.parsers.layout import (
    CELL,
    LINE,
    PARAGRAPH,
    TextBuilder,
    collapse_whitespace,
    nest_sections,
)

MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
MAIN_PART = "word/document.xml"
_MIB = 1024 * 1024
# Small parts may compress far better than the ratio limit (a run of empty table cells, a
# repeated style) without costing anything; only parts that inflate past this are judged.
_RATIO_FLOOR_BYTES = _MIB
_HEADING_STYLE = re.compile(r"Heading ([1-9])")
_TITLE_LEVEL = 0  # the "Title" style encloses Heading 1


def parse_docx(data: bytes, config: IngestionConfig) -> ParsedDocument:
    """Parse a Word document into its body's text, title and heading sections.

    Paragraphs are separated by blank lines, a paragraph's line breaks kept; a table's rows
    are lines and its cells are separated by `` | `` (a merged cell counted once); tables
    nested in cells are read in place. Paragraphs styled ``Title`` and ``Heading 1`` to
    ``Heading 9`` become sections, ``Title`` enclosing ``Heading 1``. Page headers and footers
    are not read. The title is the document's core ``title`` property, else its first
    ``Title`` paragraph, else its first ``Heading 1``.

    Raises:
        DocumentTooLargeError: the ZIP entries add up to more than ``config.max_unzipped_mb``
            MiB, or an entry over 1 MiB inflates more than ``config.max_compression_ratio``
            times.
        ParseError: the bytes are not a ZIP, or not a Word document.
    """
    check_archive(data, config)
    try:
        document = docx.Document(io.BytesIO(data))
        builder = TextBuilder()
        _write_blocks(document, builder)
        core_title = document.core_properties.title
    except RecursionError as exc:
        raise ParseError("not a valid DOCX: tables nested too deeply") from exc
    # python-docx raises its own errors, lxml's and builtin ones (KeyError for a missing part);
    # whichever it is, the file is not a Word document we can read.
    except Exception as exc:
        raise ParseError(f"not a valid DOCX: {exc}") from exc
    text, headings = builder.build()
    title = (
        collapse_whitespace(core_title or "")
        or next((h.title for h in headings if h.level == _TITLE_LEVEL), None)
        or next((h.title for h in headings if h.level == 1), None)
    )
    return ParsedDocument(
        text=text,
        media_type=MEDIA_TYPE,
        title=title,
        sections=nest_sections(headings, len(text)),
    )


def check_archive(data: bytes, config: IngestionConfig) -> None:
    """Refuse a ZIP that is not a DOCX or would inflate too far, from its directory alone.

    Raises:
        ParseError: the bytes are not a ZIP, or it has no ``word/document.xml``.
        DocumentTooLargeError: see :func:`parse_docx`.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError) as exc:
        raise ParseError(f"not a valid DOCX: not a ZIP archive ({exc})") from exc
    if MAIN_PART not in {entry.filename for entry in entries}:
        raise ParseError(f"not a valid DOCX: the ZIP archive has no {MAIN_PART}")
    total = sum(entry.file_size for entry in entries)
    if total > config.max_unzipped_mb * _MIB:
        raise DocumentTooLargeError(
            f"DOCX unpacks to {total / _MIB:.0f} MiB; the limit is {config.max_unzipped_mb} MiB "
            "(SHOAL_INGESTION__MAX_UNZIPPED_MB)"
        )
    for entry in entries:
        ratio = entry.file_size / max(entry.compress_size, 1)
        if entry.file_size > _RATIO_FLOOR_BYTES and ratio > config.max_compression_ratio:
            raise DocumentTooLargeError(
                f"DOCX entry {entry.filename!r} inflates {ratio:.0f} times "
                f"({entry.compress_size} to {entry.file_size} bytes), a decompression bomb; "
                f"the limit is {config.max_compression_ratio} "
                "(SHOAL_INGESTION__MAX_COMPRESSION_RATIO)"
            )


def _write_blocks(document: Document, builder: TextBuilder) -> None:
    for block in document.iter_inner_content():
        if isinstance(block, Paragraph):
            _write_paragraph(block, builder)
        else:
            _write_table(block, builder)


def _write_paragraph(paragraph: Paragraph, builder: TextBuilder) -> None:
    level = _heading_level(paragraph)
    builder.separate(PARAGRAPH)
    if level is not None:
        builder.start_heading(level)
    for index, line in enumerate(paragraph.text.split("\n")):
        if index:
            builder.separate(LINE)
        builder.write(line)
    if level is not None:
        builder.end_heading()
    builder.separate(PARAGRAPH)


def _heading_level(paragraph: Paragraph) -> int | None:
    name = paragraph.style.name if paragraph.style is not None else None
    if name == "Title":
        return _TITLE_LEVEL
    match = _HEADING_STYLE.fullmatch(name or "")
    return int(match.group(1)) if match else None


def _write_table(table: Table, builder: TextBuilder, *, nested: bool = False) -> None:
    # A table in a cell is lines of that cell, not a block of the page.
    around = LINE if nested else PARAGRAPH
    builder.separate(around)
    seen: set[object] = set()  # a merged cell appears once per grid cell it spans
    for row in table.rows:
        builder.separate(LINE)
        for cell in row.cells:
            element = cell._tc  # private, but the one identity python-docx offers for a cell
            if element in seen:
                continue
            seen.add(element)
            builder.separate(CELL)
            # Paragraphs inside a cell are lines of it, not paragraphs of the page.
            for index, block in enumerate(cell.iter_inner_content()):
                if index:
                    builder.separate(LINE)
                if isinstance(block, Paragraph):
                    builder.write(block.text)
                else:
                    _write_table(block, builder, nested=True)
        builder.separate(LINE)
    builder.separate(around)
