"""Errors of the read path.

    RetrievalError
    ├── StoreUnavailableError       the vector store failed, timed out or its breaker is open
    │                               (queries fall back; 503 where no fallback exists)
    ├── EmbeddingUnavailableError   the embedding model could not embed (queries fall back)
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
    """Raised when the vector store cannot serve a call (engine error, closed, timed out, or
    its circuit breaker is open).

    ``retry_after_s``, when known, is how long a client should wait before trying again: what
    is left of the breaker's open period (:mod:`retrieval.resilience`).
    """

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class EmbeddingUnavailableError(RetrievalError):
    """Raised when the embedding model cannot embed a text (it failed, or a fault drill says
    so). A query cannot search without the question's vector; indexing retries later."""


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
