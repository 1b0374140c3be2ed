"""What type an upload is, and turning its bytes into a :class:`ParsedDocument`.

One module per format (``text``, ``markdown``); :func:`parse` dispatches on the media type.
A format gets a parser by adding a module and a row to ``_PARSERS``, and moving its
extensions from ``_UNSUPPORTED_EXTENSIONS`` to ``_SUPPORTED_EXTENSIONS``.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable
from pathlib import PurePath

from ingestion.document import ParsedDocument
from ingestion.errors import ParseError, UnsupportedMediaError
from ingestion.parsers.markdown import parse_markdown
from ingestion.parsers.text import decode_text, parse_text

PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
HTML = "text/html"
BINARY = "application/octet-stream"

_PARSERS: dict[str, Callable[[bytes], ParsedDocument]] = {
    "text/plain": parse_text,
    "text/markdown": parse_markdown,
}
SUPPORTED_MEDIA_TYPES: frozenset[str] = frozenset(_PARSERS)

_SUPPORTED_EXTENSIONS = {
    ".txt": "text/plain",
    ".text": "text/plain",
    ".log": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".mdown": "text/markdown",
}
# Formats we recognise but cannot parse yet: refused by name rather than read as text.
# Other extensions (.py, .csv, none at all) say nothing, so the content decides.
_UNSUPPORTED_EXTENSIONS = {
    ".pdf": PDF,
    ".docx": DOCX,
    ".doc": "application/msword",
    ".odt": "application/vnd.oasis.opendocument.text",
    ".rtf": "application/rtf",
    ".html": HTML,
    ".htm": HTML,
    ".xhtml": "application/xhtml+xml",
    ".json": "application/json",
    ".xml": "application/xml",
    ".epub": "application/epub+zip",
    ".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".zip": "application/zip",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
}
_DECLARED_ALIASES = {
    "text/plain": "text/plain",
    "text/markdown": "text/markdown",
    "text/x-markdown": "text/markdown",
}
_UNKNOWN_DECLARED = {"", BINARY}
_TEXT_BOMS = (codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
_SNIFF_BYTES = 1024


def detect_media_type(
    data: bytes, *, filename: str | None = None, declared: str | None = None
) -> str:
    """Decide an upload's media type: by extension, then declared type, then content.

    1. A known extension decides: ``.txt .text .log`` are ``text/plain``; ``.md .markdown
       .mdown`` are ``text/markdown``; ``.pdf``, ``.docx``, ``.html``, ``.json``... are refused.
    2. Otherwise the declared Content-Type decides (parameters such as ``charset`` ignored):
       ``text/plain``, ``text/markdown`` and ``text/x-markdown`` are accepted; a missing type
       or ``application/octet-stream`` says nothing; any other type is refused.
    3. Otherwise the bytes decide: PDF, ZIP (docx) and HTML signatures, NUL bytes or bytes no
       encoding decodes are refused; anything else that decodes is ``text/plain``.

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
        return DOCX  # a ZIP container; docx is the one people mean to upload
    head = data[:_SNIFF_BYTES].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith((b"<!doctype html", b"<html")) or (
        head.startswith(b"<") and b"<html" in head
    ):
        return HTML
    has_bom = data.startswith(_TEXT_BOMS)
    if b"\x00" in data and not has_bom:  # UTF-16/32 text carries NULs, but also a BOM
        return BINARY
    try:
        decode_text(data)
    except ParseError:
        return BINARY
    return "text/plain"


def parse(data: bytes, *, media_type: str, filename: str | None = None) -> ParsedDocument:
    """Parse ``data`` as ``media_type`` (one of :data:`SUPPORTED_MEDIA_TYPES`).

    Pure: no I/O, no settings. The returned text is normalised
    (:func:`ingestion.normalise.normalise_text`).

    Raises:
        UnsupportedMediaError: ``media_type`` has no parser.
        ParseError: the bytes are not a valid document of that type, or hold no text.
    """
    parser = _PARSERS.get(media_type)
    if parser is None:
        raise UnsupportedMediaError(media_type, filename=filename)
    document = parser(data)
    if not document.text.strip():
        raise ParseError("document has no text")
    return document
