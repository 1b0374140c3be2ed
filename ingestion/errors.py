"""Errors of the write path's pure work.

    IngestionError
    ├── UnsupportedMediaError   the upload's type is not one Shoal parses (HTTP 415)
    ├── DocumentTooLargeError   an upload or its expansion exceeds a configured limit (HTTP 413)
    ├── ParseError              the bytes are not a valid document of their type
    │                           (the document fails and is never retried)
    └── ModelNotFoundError      an embedding model id resolves to no local directory

Bad input (the first three) marks a document ``failed(reason)`` and is never retried; the
``reason`` is the exception's message, written for the tenant who uploaded the file.
"""

from __future__ import annotations


class IngestionError(Exception):
    """Base of every error raised by :mod:`ingestion`."""


class UnsupportedMediaError(IngestionError):
    """Raised when a document's type is not one Shoal can parse."""

    def __init__(self, media_type: str, *, filename: str | None = None) -> None:
        self.media_type = media_type
        self.filename = filename
        name = f" ({filename})" if filename else ""
        super().__init__(f"unsupported media type {media_type!r}{name}")


class DocumentTooLargeError(IngestionError):
    """Raised when a document exceeds a size limit; the message names the limit."""


class ParseError(IngestionError):
    """Raised when bytes cannot be parsed as their declared or detected type."""


class ModelNotFoundError(IngestionError):
    """Raised when an embedding model id names neither a bundled model nor a local directory."""
