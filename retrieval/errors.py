"""Errors of the read path.

    RetrievalError
    ├── StoreError                  the vector store did not do what it was asked
    │   ├── StoreUnavailableError   it failed, timed out or its breaker is open (an outage:
    │   │                           queries fall back; 503 where no fallback exists)
    │   └── StoreRequestError       it answered, refusing the request (a bug: no fallback, no
    │                               retry, never counted against its breaker; 500)
    ├── EmbeddingUnavailableError   the embedding model could not embed (queries fall back)
    ├── CacheUnavailableError       the embedding cache failed (its callers compute instead)
    ├── GenerationUnavailableError  an LLM backend could not answer (a dispatcher falls back)
    └── InvalidQueryError           the caller asked for what cannot be: a question longer than
        │                           the model reads, routes naming no generator (a 422)
        ├── QuestionTooLongError
        └── RoutesError

Adapters translate their engine's exceptions into these (``raise ... from exc``); nothing above
:mod:`retrieval.stores` catches ``qdrant_edge`` or ``qdrant_client`` errors, nothing above
:mod:`retrieval.generation` catches ``openai`` or ``transformers`` errors, nothing above
:mod:`retrieval.cache` catches ``redis`` errors.
"""

from __future__ import annotations


class RetrievalError(Exception):
    """Base of every error raised by :mod:`retrieval`."""


class StoreError(RetrievalError):
    """Base of the vector store's errors: catch it where any failure is handled alike (a
    best-effort clean-up), one of its two kinds where an outage and a refusal differ."""


class StoreUnavailableError(StoreError):
    """Raised when the vector store cannot serve a call (engine error, closed, timed out, or
    its circuit breaker is open).

    ``retry_after_s``, when known, is how long a client should wait before trying again: what
    is left of the breaker's open period (:mod:`retrieval.resilience`).
    """

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class StoreRequestError(StoreError):
    """Raised when the vector store answered and refused the request itself: a vector of the
    wrong dimension, an upsert into a collection that does not exist, a request its API rejects
    (an HTTP 4xx other than 401, 403, 408 and 429; gRPC ``INVALID_ARGUMENT``, ``NOT_FOUND``,
    ``ALREADY_EXISTS``, ``FAILED_PRECONDITION`` or ``OUT_OF_RANGE``; a ``ValueError`` from
    qdrant-client's local mode; Edge's input errors).

    The store is up, so this is no outage: its breaker counts the call as answered, a query does
    not fall back to a cached answer, indexing does not retry. What users send is validated
    before it reaches the store, so the request is a bug of its caller or a deployment at odds
    with its data (an embedding model whose dimension differs from a collection's): the API
    answers 500 ``/problems/store-request-rejected`` and logs it. Refused credentials (401, 403)
    and "not now" (408, 429) are outages instead: :class:`StoreUnavailableError`.

    ``status_code`` is the store's HTTP status when it sent one.
    """

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


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

    Retrying is the dispatcher's decision, not the backend's: it may fall back to another backend.
    """

    def __init__(self, message: str, *, backend: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.backend = backend
        self.status_code = status_code


class InvalidQueryError(RetrievalError):
    """Raised when what a caller asked for cannot be served as asked; ``field`` names the
    culprit. The app answers it as an invalid request (422)."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


class QuestionTooLongError(InvalidQueryError):
    """Raised when a question has more tokens than the embedding model reads (it would be
    truncated, and answered from a part of it)."""


class RoutesError(InvalidQueryError):
    """Raised when a ``routes`` object does not describe routes, or names a generator the
    operator's catalog lacks."""
