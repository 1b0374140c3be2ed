"""What type an upload is, and turning its bytes into a :class:`ParsedDocument`.

One module per format (``text``, ``markdown``, ``html``, ``pdf``, ``word`` for DOCX, ``records``
for JSON and JSONL); :func:`parse` dispatches on the media type. A format gets a parser by
adding a module and a row to ``_PARSERS``, and its extensions to ``_SUPPORTED_EXTENSIONS``.
JSON and JSONL uploads are first split into one document per record where they hold records
(:func:`split_upload`); any other JSON file is one document, its leaves flattened to text.
"""

from __future__ import annotations

import codecs
import io
import zipfile
from collections.abc import Callable
from pathlib import PurePath

from ingestion.config import DEFAULT_INGESTION, IngestionConfig
from ingestion.document import ParsedDocument
from ingestion.errors import DocumentTooLargeError, ParseError, UnsupportedMediaError
from ingestion.parsers.html import parse_html
from ingestion.parsers.markdown import parse_markdown
from ingestion.parsers.pdf import parse_pdf
from ingestion.parsers.records import (
    JSON,
    JSONL,
    Record,
    parse_json,
    parse_jsonl,
    sniff_json,
    split_records,
    split_upload,
)
from ingestion.parsers.text import decode_text, parse_text
from ingestion.parsers.word import MAIN_PART, parse_docx

__all__ = [
    "DOCX",
    "HTML",
    "JSON",
    "JSONL",
    "PDF",
    "RECORD_MEDIA_TYPES",
    "SUPPORTED_MEDIA_TYPES",
    "XHTML",
    "Record",
    "detect_media_type",
    "parse",
    "split_records",
    "split_upload",
]

PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
HTML = "text/html"
XHTML = "application/xhtml+xml"
ZIP = "application/zip"
BINARY = "application/octet-stream"

Parser = Callable[[bytes, IngestionConfig], ParsedDocument]
_PARSERS: dict[str, Parser] = {
    "text/plain": lambda data, _config: parse_text(data),
    "text/markdown": lambda data, _config: parse_markdown(data),
    HTML: lambda data, _config: parse_html(data),
    XHTML: lambda data, _config: parse_html(data),
    PDF: parse_pdf,
    DOCX: parse_docx,
    JSON: parse_json,
    JSONL: parse_jsonl,
}
SUPPORTED_MEDIA_TYPES: frozenset[str] = frozenset(_PARSERS)
# Uploads of these types hold records, each to become its own document.
RECORD_MEDIA_TYPES: frozenset[str] = frozenset({JSON, JSONL})

_SUPPORTED_EXTENSIONS = {
    ".txt": "text/plain",
    ".text": "text/plain",
    ".log": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".mdown": "text/markdown",
    ".html": HTML,
    ".htm": HTML,
    ".xhtml": XHTML,
    ".pdf": PDF,
    ".docx": DOCX,
    ".json": JSON,
    ".jsonl": JSONL,
    ".ndjson": JSONL,
}
# Formats we recognise but cannot parse: refused by name rather than read as text.
# Other extensions (.py, .csv, none at all) say nothing, so the content decides.
_UNSUPPORTED_EXTENSIONS = {
    ".doc": "application/msword",
    ".odt": "application/vnd.oasis.opendocument.text",
    ".rtf": "application/rtf",
    ".xml": "application/xml",
    ".epub": "application/epub+zip",
    ".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".zip": ZIP,
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
}
_DECLARED_ALIASES = {
    "text/plain": "text/plain",
    "text/markdown": "text/markdown",
    "text/x-markdown": "text/markdown",
    HTML: HTML,
    XHTML: XHTML,
    PDF: PDF,
    DOCX: DOCX,
    JSON: JSON,
    JSONL: JSONL,
    "application/jsonl": JSONL,
}
_UNKNOWN_DECLARED = {"", BINARY}
_TEXT_BOMS = (codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
_SNIFF_BYTES = 1024


def detect_media_type(
    data: bytes, *, filename: str | None = None, declared: str | None = None
) -> str:
    """Decide an upload's media type: by extension, then declared type, then content.

    1. A known extension decides: ``.txt .text .log`` are ``text/plain``; ``.md .markdown
       .mdown`` ``text/markdown``; ``.html .htm`` ``text/html``; ``.xhtml``
       ``application/xhtml+xml``; ``.pdf`` ``application/pdf``; ``.docx`` the DOCX type;
       ``.json`` ``application/json``; ``.jsonl .ndjson`` ``application/x-ndjson``. ``.doc
       .odt .rtf .xml .epub .pptx .xlsx .zip`` and images are refused.
    2. Otherwise the declared Content-Type decides (parameters such as ``charset`` ignored):
       each supported type is accepted, and ``text/x-markdown`` and ``application/jsonl`` as
       aliases; a missing type or ``application/octet-stream`` says nothing; any other type
       is refused.
    3. Otherwise the bytes decide: ``%PDF`` is a PDF; a ZIP holding ``word/document.xml`` is a
       DOCX, any other ZIP is refused; a start such as ``<!DOCTYPE html``, ``<html`` or
       ``<p>`` is HTML; NUL bytes, or bytes no encoding decodes, are refused; text that is a
       JSON object or array is ``application/json``, lines of JSON objects
       ``application/x-ndjson``, and any other text ``text/plain``.

    Returns:
        One of :data:`SUPPORTED_MEDIA_TYPES`.

    Raises:
        UnsupportedMediaError: the type is known but not parsed, or the bytes are not text;
            ``media_type`` names what was detected.
    """
    suffix = PurePath(filename).suffix.lower() if filename else ""
    if suffix in _SUPPORTED_EXTENSIONS:
        return _SUPPORTED_EXTENSIONS[suffix]
    if suffix in _UNSUPPORTED_EXTENSIONS:
        raise UnsupportedMediaError(_UNSUPPORTED_EXTENSIONS[suffix], filename=filename)

    essence = (declared or "").split(";", 1)[0].strip().lower()
    if essence in _DECLARED_ALIASES:
        return _DECLARED_ALIASES[essence]
    if essence not in _UNKNOWN_DECLARED:
        raise UnsupportedMediaError(essence, filename=filename)

    sniffed = _sniff(data)
    if sniffed not in SUPPORTED_MEDIA_TYPES:
        raise UnsupportedMediaError(sniffed, filename=filename)
    return sniffed


def _sniff(data: bytes) -> str:
    if data.startswith(b"%PDF"):
        return PDF
    if data.startswith(b"PK\x03\x04"):
        return _sniff_zip(data)
    head = data[:_SNIFF_BYTES].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if _is_html(head):
        return HTML
    has_bom = data.startswith(_TEXT_BOMS)
    if b"\x00" in data and not has_bom:  # UTF-16/32 text carries NULs, but also a BOM
        return BINARY
    try:
        text = decode_text(data)
    except ParseError:
        return BINARY
    return sniff_json(text) or "text/plain"


def _sniff_zip(data: bytes) -> str:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError):
        return ZIP
    return DOCX if MAIN_PART in names else ZIP


# The HTML Standard's sniffing signatures (MIME Sniffing, 7.1), each ending in a space or ">".
_HTML_TAGS = tuple(
    f"<{tag}".encode()
    for tag in (
        "!doctype html",
        "html",
        "head",
        "script",
        "iframe",
        "h1",
        "div",
        "font",
        "table",
        "a",
        "style",
        "title",
        "b",
        "body",
        "br",
        "p",
        "!--",
    )
)


def _is_html(head: bytes) -> bool:
    """Whether the lowercased, left-stripped first bytes of an upload look like HTML."""
    for tag in _HTML_TAGS:
        if head.startswith(tag) and head[len(tag) : len(tag) + 1] in (b" ", b">"):
            return True
    # XHTML: an XML declaration, then the html element.
    return head.startswith(b"<?xml") and b"<html" in head


def parse(
    data: bytes,
    *,
    media_type: str,
    filename: str | None = None,
    config: IngestionConfig = DEFAULT_INGESTION,
) -> ParsedDocument:
    """Parse ``data`` as ``media_type`` (one of :data:`SUPPORTED_MEDIA_TYPES`).

    Pure: no I/O, no settings read (``config`` carries the limits). The returned text is
    normalised (:func:`ingestion.normalise.normalise_text`). A JSON file is one document (a
    record, or any other value flattened); a JSONL file must hold one line, and
    :func:`split_upload` splits one that holds several.

    Raises:
        UnsupportedMediaError: ``media_type`` has no parser.
        ParseError: the bytes are not a valid document of that type, or hold no text.
        DocumentTooLargeError: the document passes one of ``config``'s limits; the message
            names the limit and its setting.
    """
    parser = _PARSERS.get(media_type)
    if parser is None:
        raise UnsupportedMediaError(media_type, filename=filename)
    document = parser(data, config)
    if len(document.text) > config.max_chars:
        raise DocumentTooLargeError(
            f"document has {len(document.text)} characters of text; the limit is "
            f"{config.max_chars} (SHOAL_INGESTION__MAX_CHARS)"
        )
    if not document.text.strip():
        raise ParseError("document has no text")
    return document
