"""Errors of the read path.

    RetrievalError
    └── StoreUnavailableError   the vector store failed or timed out (HTTP 503 where no fallback)

Adapters translate their engine's exceptions into these (``raise ... from exc``); nothing above
:mod:`retrieval.stores` catches ``qdrant_edge`` or ``qdrant_client`` errors.
"""

from __future__ import annotations


class RetrievalError(Exception):
    """Base of every error raised by :mod:`retrieval`."""


class StoreUnavailableError(RetrievalError):
    """Raised when the vector store cannot serve a call (engine error, closed, timed out)."""
