"""RFC 9457 problem details for every error, in one place.

Each domain error maps to a status and a documented ``type`` (``/problems/<slug>``), found by
walking the exception's MRO so subclasses inherit their parent's mapping. Anything unmapped is a
bug: logged with its stack, answered with a bare 500 that reveals nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route

from app.errors import (
    AuthenticationError,
    ConflictError,
    EmbeddingModelMismatchError,
    IdempotencyKeyReusedError,
    InvalidRequestError,
    LimiterUnavailableError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitedError,
)
from app.gateway.openai_errors import is_openai_path, openai_error_body
from app.guards.faults import FaultRegistryUnavailableError
from app.services.limits import rate_limit_headers
from ingestion.errors import DocumentTooLargeError, ParseError, UnsupportedMediaError
from retrieval.errors import (
    EmbeddingUnavailableError,
    InvalidQueryError,
    StoreRequestError,
    StoreUnavailableError,
)

log = structlog.get_logger(__name__)

PROBLEM_JSON = "application/problem+json"


@dataclass(frozen=True)
class ProblemType:
    status: int
    slug: str
    title: str

    @property
    def uri(self) -> str:
        return f"/problems/{self.slug}"


MALFORMED = ProblemType(400, "malformed-request", "The request body cannot be read")
UNAUTHENTICATED = ProblemType(401, "unauthenticated", "Missing or invalid API key")
FORBIDDEN = ProblemType(403, "forbidden", "The API key lacks the scope for this action")
NOT_FOUND = ProblemType(404, "not-found", "Not found")
METHOD_NOT_ALLOWED = ProblemType(405, "method-not-allowed", "Method not allowed")
CONFLICT = ProblemType(409, "conflict", "Already exists")
EMBEDDING_MODEL_MISMATCH = ProblemType(
    409, "embedding-model-mismatch", "The namespace was indexed with another embedding model"
)
PAYLOAD_TOO_LARGE = ProblemType(413, "payload-too-large", "Request body too large")
UNSUPPORTED_MEDIA = ProblemType(415, "unsupported-media-type", "Unsupported media type")
VALIDATION = ProblemType(422, "validation-error", "The request is invalid")
INVALID_REQUEST = ProblemType(422, "invalid-request", "The request breaks a rule")
IDEMPOTENCY_KEY_REUSED = ProblemType(
    422, "idempotency-key-reused", "The idempotency key was used for another request"
)
UNPARSABLE = ProblemType(422, "unparsable-document", "The document cannot be parsed")
RATE_LIMITED = ProblemType(429, "rate-limited", "A request or token budget is spent")
STORE_UNAVAILABLE = ProblemType(503, "store-unavailable", "The vector store is unavailable")
EMBEDDING_UNAVAILABLE = ProblemType(
    503, "embedding-unavailable", "The embedding model is unavailable"
)
DATABASE_UNAVAILABLE = ProblemType(503, "database-unavailable", "The database is unavailable")
FAULTS_UNAVAILABLE = ProblemType(
    503, "faults-unavailable", "The shared fault registry is unavailable"
)
LIMITER_UNAVAILABLE = ProblemType(
    503, "limiter-unavailable", "The shared rate limiter is unavailable"
)
INTERNAL = ProblemType(500, "internal-error", "Internal server error")
# The store answered and refused a request Shoal made: a bug, or data at odds with the deployment
# (a collection of another dimension than the embedding model's). Not the client's fault (what
# it sent was validated), not an outage (retrying fails alike): a 500 that names its cause.
STORE_REQUEST_REJECTED = ProblemType(
    500, "store-request-rejected", "The vector store refused the platform's request"
)

# Every problem type, for the docs and the test that keeps the README's table honest.
ALL_PROBLEMS = (
    MALFORMED,
    UNAUTHENTICATED,
    FORBIDDEN,
    NOT_FOUND,
    METHOD_NOT_ALLOWED,
    CONFLICT,
    EMBEDDING_MODEL_MISMATCH,
    PAYLOAD_TOO_LARGE,
    UNSUPPORTED_MEDIA,
    VALIDATION,
    INVALID_REQUEST,
    IDEMPOTENCY_KEY_REUSED,
    UNPARSABLE,
    RATE_LIMITED,
    STORE_UNAVAILABLE,
    LIMITER_UNAVAILABLE,
    EMBEDDING_UNAVAILABLE,
    DATABASE_UNAVAILABLE,
    FAULTS_UNAVAILABLE,
    STORE_REQUEST_REJECTED,
    INTERNAL,
)

ERROR_PROBLEMS: dict[type[Exception], ProblemType] = {
    AuthenticationError: UNAUTHENTICATED,
    PermissionDeniedError: FORBIDDEN,
    NotFoundError: NOT_FOUND,
    ConflictError: CONFLICT,
    EmbeddingModelMismatchError: EMBEDDING_MODEL_MISMATCH,
    InvalidRequestError: INVALID_REQUEST,
    # A question longer than the model reads, routes naming no generator (retrieval's rules).
    InvalidQueryError: INVALID_REQUEST,
    IdempotencyKeyReusedError: IDEMPOTENCY_KEY_REUSED,
    PayloadTooLargeError: PAYLOAD_TOO_LARGE,
    DocumentTooLargeError: PAYLOAD_TOO_LARGE,
    UnsupportedMediaError: UNSUPPORTED_MEDIA,
    ParseError: UNPARSABLE,
    StoreUnavailableError: STORE_UNAVAILABLE,
    StoreRequestError: STORE_REQUEST_REJECTED,
    RateLimitedError: RATE_LIMITED,
    LimiterUnavailableError: LIMITER_UNAVAILABLE,
    EmbeddingUnavailableError: EMBEDDING_UNAVAILABLE,
    FaultRegistryUnavailableError: FAULTS_UNAVAILABLE,
    # The database is down, restarting or unreachable (connect refused, connection lost, pool
    # exhausted). Other DBAPI errors (integrity, programming) are bugs: 500.
    sa.OperationalError: DATABASE_UNAVAILABLE,
    sa.InterfaceError: DATABASE_UNAVAILABLE,
    sa.TimeoutError: DATABASE_UNAVAILABLE,
}
# Outages a client should retry: answered with Retry-After (the store's says how long its
# breaker stays open).
_OUTAGES = (STORE_UNAVAILABLE, EMBEDDING_UNAVAILABLE, DATABASE_UNAVAILABLE, FAULTS_UNAVAILABLE)
_DEFAULT_RETRY_AFTER_S = 5
# HTTPExceptions Starlette and FastAPI raise themselves; 400: a body that cannot be read at all
# (broken multipart, JSON nested past the parser's recursion limit), before any handler runs.
STATUS_PROBLEMS = {
    p.status: p for p in (MALFORMED, NOT_FOUND, METHOD_NOT_ALLOWED, PAYLOAD_TOO_LARGE)
}


def problem_for(exc: Exception) -> ProblemType | None:
    for cls in type(exc).__mro__:
        if cls in ERROR_PROBLEMS:
            return ERROR_PROBLEMS[cls]
    return None


def problem_response(
    request: Request,
    problem: ProblemType,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    **extensions: Any,  # Any: extension members are free-form JSON
) -> JSONResponse:
    """The problem as ``application/problem+json``; on the OpenAI door (``/v1/openai``), the
    same status, headers and message in OpenAI's error shape (:mod:`app.gateway.openai_errors`)."""
    request_id = getattr(request.state, "request_id", None)
    all_headers = dict(headers or {})
    if request_id:
        all_headers["X-Request-ID"] = request_id
    if is_openai_path(request.url.path):
        openai_body = openai_error_body(problem.status, problem.slug, detail, extensions)
        return JSONResponse(openai_body, status_code=problem.status, headers=all_headers)
    body: dict[str, Any] = {
        "type": problem.uri,
        "title": problem.title,
        "status": problem.status,
        "detail": detail,
        **({"instance": f"urn:shoal:request:{request_id}"} if request_id else {}),
        **extensions,
    }
    return JSONResponse(
        body, status_code=problem.status, headers=all_headers, media_type=PROBLEM_JSON
    )


@dataclass(frozen=True)
class Problem:
    """What a client is told of an error, whichever door it came through: the problem type,
    the detail (never a driver's SQL nor the store's internals), the seconds after which a
    retry may succeed, and extension members."""

    type: ProblemType
    detail: str
    retry_after_s: int | None = None
    extensions: dict[str, Any] = field(default_factory=dict)  # Any: free-form JSON


UNEXPECTED_DETAIL = "an unexpected error occurred; it has been logged"


def describe(exc: Exception, *, where: str) -> Problem:
    """The problem ``exc`` is to a client; an unmapped error (a bug) is logged with its stack
    and told as a bare internal error. ``where`` (a path, a tool) goes to the logs."""
    problem = problem_for(exc)
    if problem is None:
        log.error("unhandled_error", exc_info=exc, path=where)
        return Problem(INTERNAL, UNEXPECTED_DETAIL)
    extensions: dict[str, Any] = {}
    if isinstance(exc, InvalidRequestError | InvalidQueryError) and exc.field:
        extensions["field"] = exc.field
    detail = str(exc)
    retry_after_s = None
    if problem in _OUTAGES:
        retry_after_s = getattr(exc, "retry_after_s", None) or _DEFAULT_RETRY_AFTER_S
    if isinstance(exc, RateLimitedError | LimiterUnavailableError):
        retry_after_s = exc.retry_after_s
    if problem is DATABASE_UNAVAILABLE:
        # The driver's message carries the SQL and its parameters: log it, never send it.
        log.warning("database_unavailable", error=str(exc), path=where)
        cause = getattr(exc, "orig", None) or exc
        detail = f"the database is unavailable ({type(cause).__name__}); retry shortly"
    if problem is STORE_REQUEST_REJECTED:
        # The store's message names internal collections: log it, never send it.
        log.error("store_request_rejected", error=str(exc), path=where)
        detail = "the vector store refused a request the platform made; it has been logged"
    whole_s = None if retry_after_s is None else max(1, math.ceil(retry_after_s))
    return Problem(problem, detail, whole_s, extensions)


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    if problem_for(exc) is None:
        return await _unexpected_error(request, exc)
    problem = describe(exc, where=request.url.path)
    headers = {"WWW-Authenticate": "Bearer"} if problem.type is UNAUTHENTICATED else {}
    if problem.retry_after_s is not None:
        headers = {"Retry-After": str(problem.retry_after_s)}
    if isinstance(exc, RateLimitedError) and exc.decision is not None:
        headers.update(rate_limit_headers(exc.decision))
    return problem_response(
        request, problem.type, problem.detail, headers=headers, **problem.extensions
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)  # noqa: S101  # registered for that type only
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(p) for p in first["loc"])
    return problem_response(request, VALIDATION, f"{where}: {first['msg']}", errors=errors)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)  # noqa: S101  # registered for that type only
    if isinstance(exc.__cause__, UnicodeDecodeError):
        # FastAPI's 400 "error parsing the body": JSON that is not UTF-8 is invalid JSON, a
        # 422 json_invalid like a syntax error (and like an upload's body, parsed by Pydantic).
        errors = [{"loc": ["body"], "msg": "JSON body is not valid UTF-8", "type": "json_invalid"}]
        return problem_response(request, VALIDATION, "body: not valid UTF-8", errors=errors)
    problem = STATUS_PROBLEMS.get(exc.status_code) or ProblemType(
        exc.status_code, "http-error", "HTTP error"
    )
    detail = exc.detail if isinstance(exc.detail, str) else problem.title
    if isinstance(exc.__cause__, RecursionError):  # json.loads gave up
        detail = "the JSON body is nested too deeply to parse"
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(_allowed_methods(request))
    return problem_response(request, problem, detail, headers=headers)


def _allowed_methods(request: Request) -> list[str]:
    """Every method the request's path takes. Starlette's own ``Allow`` names only the first
    route matching the path, while ``GET`` and ``POST /v1/namespaces`` are two routes."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, Route) and route.matches(request.scope)[0] is not Match.NONE:
            methods |= route.methods or set()
    return sorted(methods)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled_error", exc_info=exc, path=request.url.path)
    return problem_response(request, INTERNAL, UNEXPECTED_DETAIL)


def install_problem_handlers(app: FastAPI) -> None:
    """Answer every error as problem+json."""
    for cls in ERROR_PROBLEMS:
        app.add_exception_handler(cls, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
