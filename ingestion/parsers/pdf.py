"""PDF: the text of each page, with page numbers kept for citations.

pypdf reads the file. Its own guards against decompression bombs (a stream that inflates past a
byte limit raises instead of filling memory) are pinned here rather than inherited, and two of
ours sit on top: a page count and a total of extracted characters.
"""

from __future__ import annotations

import io
from contextlib import AbstractContextManager

import structlog
from pypdf import Configuration, PasswordType, PdfReader, apply_configuration
from pypdf.errors import DependencyError, LimitReachedError

from ingestion.config import IngestionConfig
from ingestion.document import Page, ParsedDocument
from ingestion.errors import DocumentTooLargeError, ParseError
from ingestion.normalise import normalise_text

log = structlog.get_logger(__name__)

MEDIA_TYPE = "application/pdf"
PAGE_SEPARATOR = "\n\n"

# No single stream may inflate past this, however it is encoded. Content streams of real text
# pages are kilobytes to a few MiB; pypdf's default is 75 MB.
STREAM_LIMIT_BYTES = 64 * 1024 * 1024


def parse_pdf(data: bytes, config: IngestionConfig) -> ParsedDocument:
    """Parse a PDF into the text of its pages, one :class:`Page` span per page.

    Pages are separated by a blank line; a page's text is as pypdf extracts it, normalised and
    stripped (a page without text, such as a scan, has an empty span). The title is the
    document information's ``/Title`` when it has one. An encrypted PDF that opens without a
    password (owner-password-only protection) is read.

    Raises:
        ParseError: the bytes are not a PDF pypdf can read, or it needs a password.
        DocumentTooLargeError: more than ``config.max_pages`` pages, more than
            ``config.max_chars`` characters of text, or a stream that inflates past
            :data:`STREAM_LIMIT_BYTES` (a decompression bomb).
    """
    with _stream_limits():
        try:
            reader = _open(data)
            page_count = _page_count(reader)
            if page_count > config.max_pages:
                raise DocumentTooLargeError(
                    f"PDF has {page_count} pages; the limit is {config.max_pages} "
                    "(SHOAL_INGESTION__MAX_PAGES)"
                )
            texts = _page_texts(reader, page_count, config)
            title = _title(reader)
        except LimitReachedError as exc:
            raise DocumentTooLargeError(
                f"PDF content inflates past pypdf's limits (one stream may hold at most "
                f"{STREAM_LIMIT_BYTES // (1024 * 1024)} MiB): refused as a decompression bomb "
                f"({exc})"
            ) from exc
    pages: list[Page] = []
    offset = 0
    for number, text in enumerate(texts, start=1):
        if number > 1:
            offset += len(PAGE_SEPARATOR)
        pages.append(Page(number, offset, offset + len(text)))
        offset += len(text)
    return ParsedDocument(
        text=PAGE_SEPARATOR.join(texts), media_type=MEDIA_TYPE, title=title, pages=tuple(pages)
    )


def _stream_limits() -> AbstractContextManager[Configuration]:
    """pypdf's configuration for this thread, with every stream limit at ours."""
    return apply_configuration(
        maximum_declared_stream_length=STREAM_LIMIT_BYTES,
        array_based_stream_maximum_output_length=STREAM_LIMIT_BYTES,
        zlib_maximum_output_length=STREAM_LIMIT_BYTES,
        lzw_maximum_output_length=STREAM_LIMIT_BYTES,
        run_length_maximum_output_length=STREAM_LIMIT_BYTES,
        brotli_maximum_output_length=STREAM_LIMIT_BYTES,
        jbig2_maximum_output_length=STREAM_LIMIT_BYTES,
    )


def _open(data: bytes) -> PdfReader:
    try:
        reader = PdfReader(io.BytesIO(data))
        encrypted = reader.is_encrypted
    except LimitReachedError:
        raise
    # pypdf raises its own errors and builtin ones (KeyError, ValueError, ...) on broken files;
    # whichever it is, the file is not a PDF we can read.
    except Exception as exc:
        raise ParseError(f"not a valid PDF: {_describe(exc)}") from exc
    if encrypted:
        try:
            opened = reader.decrypt("")
        except DependencyError as exc:  # AES needs the cryptography package
            raise ParseError(f"PDF is encrypted in a way this server cannot read: {exc}") from exc
        if opened == PasswordType.NOT_DECRYPTED:
            raise ParseError("PDF is encrypted: it needs a password to open")
    return reader


def _page_count(reader: PdfReader) -> int:
    try:
        return len(reader.pages)
    except LimitReachedError:
        raise
    except Exception as exc:  # as in _open
        raise ParseError(f"not a valid PDF: its page tree is broken: {_describe(exc)}") from exc


def _page_texts(reader: PdfReader, page_count: int, config: IngestionConfig) -> list[str]:
    texts: list[str] = []
    total = 0
    for number in range(1, page_count + 1):
        text = normalise_text(_extract(reader, number)).strip()
        total += len(text)
        if total > config.max_chars:
            raise DocumentTooLargeError(
                f"PDF text passes {config.max_chars} characters by page {number}; the limit is "
                f"{config.max_chars} (SHOAL_INGESTION__MAX_CHARS)"
            )
        texts.append(text)
    return texts


def _extract(reader: PdfReader, number: int) -> str:
    try:
        return reader.pages[number - 1].extract_text()
    except LimitReachedError:
        raise
    except Exception as exc:  # as in _open: anything pypdf raises means a broken page
        raise ParseError(f"not a valid PDF: page {number}: {_describe(exc)}") from exc


def _title(reader: PdfReader) -> str | None:
    try:
        metadata = reader.metadata
        title = metadata.title if metadata is not None else None
    except Exception as exc:  # a broken information dictionary costs only the title
        log.warning("pdf_title_unreadable", error=type(exc).__name__, detail=_describe(exc))
        return None
    if not isinstance(title, str):
        return None
    return " ".join(normalise_text(title).split()) or None


def _describe(exc: Exception) -> str:
    return str(exc) or type(exc).__name__
