"""RFC 9457 problem details for every error, in one place.

Each domain error maps to a status and a documented ``type`` (``/problems/<slug>``), found by
walking the exception's MRO so subclasses inherit their parent's mapping. Anything unmapped is a
bug: logged with its stack, answered with a bare 500 that reveals nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.errors import (
    AuthenticationError,
    ConflictError,
    IdempotencyKeyReusedError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
)
from ingestion.errors import DocumentTooLargeError, ParseError, UnsupportedMediaError
from retrieval.errors import StoreUnavailableError

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


UNAUTHENTICATED = ProblemType(401, "unauthenticated", "Missing or invalid API key")
FORBIDDEN = ProblemType(403, "forbidden", "The API key lacks the scope for this action")
NOT_FOUND = ProblemType(404, "not-found", "Not found")
METHOD_NOT_ALLOWED = ProblemType(405, "method-not-allowed", "Method not allowed")
CONFLICT = ProblemType(409, "conflict", "Already exists")
PAYLOAD_TOO_LARGE = ProblemType(413, "payload-too-large", "Request body too large")
UNSUPPORTED_MEDIA = ProblemType(415, "unsupported-media-type", "Unsupported media type")
VALIDATION = ProblemType(422, "validation-error", "The request is invalid")
INVALID_REQUEST = ProblemType(422, "invalid-request", "The request breaks a rule")
IDEMPOTENCY_KEY_REUSED = ProblemType(
    422, "idempotency-key-reused", "The idempotency key was used for another request"
)
UNPARSABLE = ProblemType(422, "unparsable-document", "The document cannot be parsed")
STORE_UNAVAILABLE = ProblemType(503, "store-unavailable", "The vector store is unavailable")
INTERNAL = ProblemType(500, "internal-error", "Internal server error")

# Every problem type, for the docs and the test that keeps the README's table honest.
ALL_PROBLEMS = (
    UNAUTHENTICATED,
    FORBIDDEN,
    NOT_FOUND,
    METHOD_NOT_ALLOWED,
    CONFLICT,
    PAYLOAD_TOO_LARGE,
    UNSUPPORTED_MEDIA,
    VALIDATION,
    INVALID_REQUEST,
    IDEMPOTENCY_KEY_REUSED,
    UNPARSABLE,
    STORE_UNAVAILABLE,
    INTERNAL,
)

ERROR_PROBLEMS: dict[type[Exception], ProblemType] = {
    AuthenticationError: UNAUTHENTICATED,
    PermissionDeniedError: FORBIDDEN,
    NotFoundError: NOT_FOUND,
    ConflictError: CONFLICT,
    InvalidRequestError: INVALID_REQUEST,
    IdempotencyKeyReusedError: IDEMPOTENCY_KEY_REUSED,
    PayloadTooLargeError: PAYLOAD_TOO_LARGE,
    DocumentTooLargeError: PAYLOAD_TOO_LARGE,
    UnsupportedMediaError: UNSUPPORTED_MEDIA,
    ParseError: UNPARSABLE,
    StoreUnavailableError: STORE_UNAVAILABLE,
}
STATUS_PROBLEMS = {p.status: p for p in (NOT_FOUND, METHOD_NOT_ALLOWED, PAYLOAD_TOO_LARGE)}


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
    request_id = getattr(request.state, "request_id", None)
    body: dict[str, Any] = {
        "type": problem.uri,
        "title": problem.title,
        "status": problem.status,
        "detail": detail,
        **({"instance": f"urn:shoal:request:{request_id}"} if request_id else {}),
        **extensions,
    }
    all_headers = dict(headers or {})
    if request_id:
        all_headers["X-Request-ID"] = request_id
    return JSONResponse(
        body, status_code=problem.status, headers=all_headers, media_type=PROBLEM_JSON
    )


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    problem = problem_for(exc)
    if problem is None:
        return await _unexpected_error(request, exc)
    headers = {"WWW-Authenticate": "Bearer"} if problem is UNAUTHENTICATED else None
    extensions: dict[str, Any] = {}
    if isinstance(exc, InvalidRequestError) and exc.field:
        extensions["field"] = exc.field
    if problem is STORE_UNAVAILABLE:
        headers = {"Retry-After": "5"}
    return problem_response(request, problem, str(exc), headers=headers, **extensions)


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
    problem = STATUS_PROBLEMS.get(exc.status_code) or ProblemType(
        exc.status_code, "http-error", "HTTP error"
    )
    detail = exc.detail if isinstance(exc.detail, str) else problem.title
    return problem_response(request, problem, detail, headers=dict(exc.headers or {}))


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled_error", exc_info=exc, path=request.url.path)
    return problem_response(request, INTERNAL, "an unexpected error occurred; it has been logged")


def install_problem_handlers(app: FastAPI) -> None:
    """Answer every error as problem+json."""
    for cls in ERROR_PROBLEMS:
        app.add_exception_handler(cls, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
