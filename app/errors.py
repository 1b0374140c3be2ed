"""Errors the platform's services raise; :mod:`app.gateway.problems` maps each to an HTTP status.

ShoalError
├── AuthenticationError     no key, a malformed, unknown or revoked key (401)
├── PermissionDeniedError   the key lacks the scope the action needs (403)
├── NotFoundError           no such resource *for this caller*: another tenant's is the same (404)
├── ConflictError           the name is taken (409)
│   └── EmbeddingModelMismatchError  the namespace's vectors come from another model (409)
├── InvalidRequestError     well-formed JSON that breaks a rule the schema cannot express (422)
├── IdempotencyKeyReusedError  an ``Idempotency-Key`` sent again with another request (422)
├── PayloadTooLargeError    the request body is over ``SHOAL_MAX_UPLOAD_MB`` (413)
├── RateLimitedError        a request or token budget is spent (429, with ``Retry-After``)
└── LimiterUnavailableError the shared rate limiter is down and limits fail closed (503)
"""

from __future__ import annotations

from typing import Any


class ShoalError(Exception):
    """Base of the platform's own errors; ``str(exc)`` is the problem's ``detail``."""


class AuthenticationError(ShoalError):
    """Raised when a request carries no usable API key."""


class PermissionDeniedError(ShoalError):
    """Raised when the caller's key lacks the scope the action needs."""


class NotFoundError(ShoalError):
    """Raised when a resource does not exist for the caller.

    Another tenant's resource raises exactly this, with the same message, so a key can never
    learn whether an id or name exists elsewhere.
    """

    def __init__(self, kind: str, ident: str) -> None:
        self.kind = kind
        self.ident = ident
        super().__init__(f"{kind} {ident!r} not found")


class ConflictError(ShoalError):
    """Raised when creating something whose unique name is already taken."""


class EmbeddingModelMismatchError(ConflictError):
    """Raised when a namespace was indexed by another embedding model or runtime than this
    server's (``Namespace.embedding_model`` against the embedder's ``model_id``): their vectors
    must not be compared, so the request is refused rather than answered with noise."""

    def __init__(self, namespace: str, *, indexed_with: str, server: str) -> None:
        self.namespace = namespace
        self.indexed_with = indexed_with
        self.server = server
        super().__init__(
            f"namespace {namespace!r} was indexed with {indexed_with!r}, and this server embeds "
            f"with {server!r}: their vectors are not comparable. Set SHOAL_EMBEDDING__BACKEND "
            "and SHOAL_EMBEDDING__ONNX_PRECISION to the namespace's, or index the documents "
            "into a new namespace"
        )


class InvalidRequestError(ShoalError):
    """Raised for input the schema accepts but a rule refuses; ``field`` names the culprit."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(message)


class IdempotencyKeyReusedError(ShoalError):
    """Raised when an ``Idempotency-Key`` comes back with another namespace or body.

    A retry must repeat its request exactly; anything else is a client bug that replaying the
    first answer would hide.
    """


class PayloadTooLargeError(ShoalError):
    """Raised when a request body exceeds the configured upload limit."""


class RateLimitedError(ShoalError):
    """Raised when a request or token budget cannot cover a request.

    ``retry_after_s`` is when enough budget will have refilled; None when it never will (the
    request needs more than a whole minute's budget). ``decision`` is the limiter's
    (:class:`app.services.limiters.Decision`), for the ``RateLimit-*`` headers.
    """

    def __init__(
        self, message: str, *, retry_after_s: float | None, decision: Any = None
    ) -> None:  # Any: app.services.limiters.Decision; errors import nothing of the gateway
        self.retry_after_s = retry_after_s
        self.decision = decision
        super().__init__(message)


class LimiterUnavailableError(ShoalError):
    """Raised when the shared rate limiter (Redis) is down and the deployment fails closed."""

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message)
