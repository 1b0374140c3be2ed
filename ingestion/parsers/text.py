"""Plain text, and the byte decoding every text format shares."""

from __future__ import annotations

import codecs

import charset_normalizer

from ingestion.document import ParsedDocument
from ingestion.errors import ParseError
from ingestion.normalise import normalise_text

MEDIA_TYPE = "text/plain"

# UTF-32 first: its little-endian mark begins with UTF-16's.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def decode_text(data: bytes) -> str:
    """Decode the bytes of a text file.

    UTF-8 (with or without a byte-order mark) is tried first, then a UTF-16/32 byte-order mark,
    then charset-normalizer's best guess (latin-1, cp1252, Shift JIS, ...). The result is not
    normalised yet.

    Raises:
        ParseError: no encoding decodes ``data`` into plausible text.
    """
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding)
            except UnicodeDecodeError:
                break
    best = charset_normalizer.from_bytes(data).best()
    if best is None:
        raise ParseError("the file is not text in any encoding we recognise")
    return str(best)


def parse_text(data: bytes) -> ParsedDocument:
    """Parse a plain text file: decoded and normalised, with no title and no sections.

    The title is left to the caller, which falls back on the filename.

    Raises:
        ParseError: the bytes cannot be decoded.
    """
    return ParsedDocument(text=normalise_text(decode_text(data)), media_type=MEDIA_TYPE)
