"""Errors on the OpenAI door (``/v1/openai/...``) in OpenAI's shape, so that OpenAI clients raise
their own typed exceptions (``AuthenticationError``, ``NotFoundError``, ``RateLimitError``...).

The status, headers and message are the problem's (:mod:`app.gateway.problems` decides them, in
one place, for every door); only the body differs: ``{"error": {message, type, code, param}}``
with ``code`` the problem's slug (``not-found``, ``rate-limited``: the README's problem table)
and ``type`` OpenAI's category for the status.
"""

from __future__ import annotations

from typing import Any

OPENAI_PREFIX = "/v1/openai"

# OpenAI's error categories by status; other 4xx are invalid_request_error, other 5xx server_error.
_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    429: "rate_limit_error",
    503: "service_unavailable_error",
}

OPENAI_ERROR_SCHEMA: dict[str, Any] = {
    "title": "OpenAIError",
    "description": "OpenAI's error shape; `code` is the Shoal problem type's slug (README).",
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string", "description": "`invalid_request_error`, ..."},
                "code": {"type": "string", "description": "`not-found`, `rate-limited`, ..."},
                "param": {"type": ["string", "null"], "description": "The culprit field."},
            },
        }
    },
}


def is_openai_path(path: str) -> bool:
    return path == OPENAI_PREFIX or path.startswith(OPENAI_PREFIX + "/")


def error_type(status: int) -> str:
    """OpenAI's ``error.type`` for an HTTP status."""
    if status in _TYPES:
        return _TYPES[status]
    return "server_error" if status >= 500 else "invalid_request_error"


def openai_error_body(
    status: int, slug: str, message: str, extensions: dict[str, Any]
) -> dict[str, Any]:
    """The body of an error on the OpenAI door.

    ``param`` is the field a rule refused (``field``), or where a validation error points
    (``errors[0].loc`` without its leading ``body``).
    """
    param = extensions.get("field")
    errors = extensions.get("errors")
    if param is None and errors:
        loc = [str(part) for part in errors[0].get("loc", ())]
        param = ".".join(loc[1:] if loc[:1] == ["body"] else loc) or None
    return {"error": {"message": message, "type": error_type(status), "code": slug, "param": param}}
