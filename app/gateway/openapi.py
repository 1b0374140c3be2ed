"""The error answers the OpenAPI schema declares: every ``/v1`` operation may answer each
problem type's status with ``application/problem+json``; the OpenAI door's operations answer
the same statuses in OpenAI's error shape (``application/json``).

Derived from :data:`app.gateway.problems.ALL_PROBLEMS`, so a new problem type is declared as
soon as it exists. Two statuses stay out: 500 is a bug, never a contract, and 405 answers a
method no operation has. The schema is what clients and the schemathesis test
(``tests/hostile/test_schemathesis.py``) hold the answers to.
"""

from __future__ import annotations

from typing import Any

from app.gateway.openai_errors import OPENAI_ERROR_SCHEMA
from app.gateway.problems import ALL_PROBLEMS, PROBLEM_JSON

UNDECLARED_STATUSES = frozenset({405, 500})

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details; the `type`s are listed in the README.",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "description": "`/problems/<slug>`"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string", "description": "`urn:shoal:request:<request id>`"},
        "field": {"type": "string", "description": "invalid-request: the culprit."},
        "errors": {
            "type": "array",
            "description": "validation-error: each problem, where and what.",
            "items": {
                "type": "object",
                "properties": {
                    "loc": {"type": "array", "items": {"type": ["string", "integer"]}},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
}


def problem_responses() -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a router: each declared status, its problem types, the problem schema."""
    return _responses(PROBLEM_JSON, PROBLEM_SCHEMA, "`/problems/{}`")


def openai_error_responses() -> dict[int | str, dict[str, Any]]:
    """``responses=`` for the OpenAI door: the same statuses in OpenAI's error shape."""
    return _responses("application/json", OPENAI_ERROR_SCHEMA, "`{}`")


def _responses(
    media_type: str, schema: dict[str, Any], name: str
) -> dict[int | str, dict[str, Any]]:
    slugs: dict[int, list[str]] = {}
    for problem in ALL_PROBLEMS:
        if problem.status not in UNDECLARED_STATUSES:
            slugs.setdefault(problem.status, []).append(problem.slug)
    return {
        status: {
            "description": ", ".join(name.format(slug) for slug in slugs[status]),
            "content": {media_type: {"schema": schema}},
        }
        for status in sorted(slugs)
    }
