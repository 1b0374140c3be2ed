"""Errors of the read path.

    RetrievalError
    ├── StoreUnavailableError       the vector store failed or timed out (503 where no fallback)
    ├── CacheUnavailableError       the embedding cache failed (its callers compute instead)
    └── GenerationUnavailableError  an LLM backend could not answer (a router falls back)

Adapters translate their engine's exceptions into these (``raise ... from exc``); nothing above
:mod:`retrieval.stores` catches ``qdrant_edge`` or ``qdrant_client`` errors, nothing above
:mod:`retrieval.generation` catches ``openai`` or ``transformers`` errors, nothing above
:mod:`retrieval.cache` catches ``redis`` errors.
"""

from __future__ import annotations


class RetrievalError(Exception):
    """Base of every error raised by :mod:`retrieval`."""


class StoreUnavailableError(RetrievalError):
    """Raised when the vector store cannot serve a call (engine error, closed, timed out)."""


class CacheUnavailableError(RetrievalError):
    """Raised when the embedding cache cannot serve a call (Redis down, refused, timed out).

    Never reaches a client: the cache's callers count it as a miss and compute the vectors.
    """


class GenerationUnavailableError(RetrievalError):
    """Raised when a generation backend cannot answer: the endpoint is unreachable, timed out,
    refused the request (``status_code`` says with what), or sent a malformed response; or the
    local model failed to load or run.

    Retrying is the router's decision, not the backend's: it may fall back to another backend.
    """

    def __init__(self, message: str, *, backend: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.backend = backend
        self.status_code = status_code
