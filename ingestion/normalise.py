"""Text normalisation and the content fingerprint that upload deduplication relies on.

Normalisation is deliberately minimal: it removes what no reader can see or cite (control
characters, a byte-order mark, carriage returns) and picks one Unicode form, but keeps every
space and newline so that chunk offsets still point at the text the user wrote.
"""

from __future__ import annotations

import hashlib
import unicodedata

from ingestion.errors import ParseError

# C0 controls, DEL and C1 controls (Unicode category Cc), except tab and newline. Carriage
# returns are turned into newlines before this table applies.
_CONTROLS: dict[int, None] = {
    code: None
    for code in (*range(0x00, 0x20), *range(0x7F, 0xA0))
    if code not in (ord("\t"), ord("\n"))
}
_BOM = "\ufeff"
_TEXT_MEDIA_TYPES = frozenset({"text/plain", "text/markdown"})


def normalise_text(text: str) -> str:
    """Return ``text`` in the one form that parsing, chunking and hashing all see.

    Line endings become ``\\n`` (``\\r\\n`` and lone ``\\r``), control characters other than
    ``\\n`` and ``\\t`` are removed (NUL included), leading byte-order marks are stripped, and
    the result is NFC. Nothing else changes: whitespace is kept so that offsets stay
    meaningful. The function is idempotent.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    # Controls go before NFC: removing one can bring a combining mark next to its base
    # character, and only a later NFC pass composes them.
    text = text.translate(_CONTROLS).lstrip(_BOM)
    if unicodedata.is_normalized("NFC", text):
        return text
    return unicodedata.normalize("NFC", text)


def content_hash(text: str) -> str:
    """Return the SHA-256 hex digest of ``text`` encoded as UTF-8.

    ``text`` must already be normalised (:func:`normalise_text`); this function does not
    normalise it again.
    """
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def fingerprint(data: bytes, media_type: str) -> str:
    """Return the deduplication key of an upload.

    For text media types (``text/plain``, ``text/markdown``) this is :func:`content_hash` of
    the decoded, normalised text, so two uploads that differ only in line endings, encoding or
    Unicode normal form (NFC vs NFD) get the same fingerprint. Any other type, and text that
    cannot be decoded, hashes the raw bytes: such an upload is still accepted, and parsing
    later fails it with a readable reason.
    """
    if media_type in _TEXT_MEDIA_TYPES:
        # Imported here: the parsers package imports this module for normalise_text.
        from ingestion.parsers.text import decode_text

        try:
            return content_hash(normalise_text(decode_text(data)))
        except ParseError:
            pass
    return hashlib.sha256(data).hexdigest()
