"""The Ask page: a question against a namespace, its answer and why (route, evidence, timings),
or, with "search only", the passages alone.

Two doors answer: ``POST .../ask`` renders the whole result at once (the form without script,
and htmx), and ``POST .../ask/stream`` streams it as Server-Sent Events, which
``static/console.js`` reads and shows as the tokens come:

- ``route``: ``{name, reason}``, before any text;
- ``token``: ``{text}``, pieces of the answer in order;
- ``outcome``: ``{html}``, the finished result panel (``_answer.html``: the answer, citations,
  route, timings), rendered and escaped here, which replaces the streamed one;
- ``error``: ``{html}``, the panel saying why, if generation fails after the stream began.

Whatever fails before the stream begins (a bad form, a spent budget, a foreign namespace) is
an HTML panel with its status, as from ``.../ask``; a search-only question is one too.
"""

from __future__ import annotations

import json
from collections.abc import Generator
from dataclasses import dataclass
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Form, Request
from pydantic import BaseModel, ValidationError
from sqlalchemy.orm import Session
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.responses import Response

from app.console.web import (
    Console,
    ConsoleDep,
    ConsoleRoute,
    FormDep,
    error_status,
    form_error,
    is_htmx,
    render,
    templates,
)
from app.db.models import Namespace
from app.errors import ShoalError
from app.gateway.deps import PlatformDep, SessionDep, caller_quotas
from app.platform import Platform
from app.routers.query import closing
from app.schemas.query import QueryRequest
from app.services import namespaces
from app.services.answers import QueryResult
from app.services.keys import QUERY, authorize_tenant_scope
from app.services.query import answer_question, search_namespace, stream_answer
from app.services.questions import StreamEnd, StreamStart
from retrieval.errors import RetrievalError
from retrieval.generation.base import Delta, GenerationOptions

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)

MODES = ("hybrid", "dense", "lexical")
ROUTES = ("auto", "small", "large")


@dataclass(frozen=True)
class _Asked:
    """An Ask form, as typed (to show again) and as the service's keyword arguments."""

    form: dict[str, Any]  # Any: the form's values, shown again as typed
    search_only: bool


def _form(fields: AskFields) -> _Asked:
    form: dict[str, Any] = fields.model_dump()
    form["search_only"] = bool(fields.search_only)
    return _Asked(form=form, search_only=form["search_only"])


def _arguments(db: Session, console: Console, name: str) -> tuple[Namespace, dict[str, Any]]:
    """The namespace, and the keyword arguments of the service call the form asks for.

    Raises:
        NotFoundError: no such namespace for the caller (a 404 page, not a panel).
    """
    caller = console.caller
    access = authorize_tenant_scope(caller, QUERY)
    namespace = namespaces.get_namespace(db, access=access, name=name)
    db.commit()
    return namespace, {"access": access, "key_id": caller.key_id, "namespace_name": name}


def _prepare(
    platform: Platform, console: Console, common: dict[str, Any], asked: _Asked
) -> dict[str, Any]:
    """``common`` completed from the form (``QueryRequest``'s rules), the request counted
    against the key's budget as every API request is.

    Raises:
        json.JSONDecodeError, ValidationError: the form is not a valid question.
        RateLimitedError: the request budget is spent.
    """
    form = asked.form
    filter_text = form.get("filter", "")
    body = QueryRequest.model_validate(
        {
            "question": form.get("question", ""),
            "top_k": form.get("top_k", "").strip() or None,
            "filter": json.loads(filter_text) if filter_text.strip() else None,
            "mode": form.get("mode") or None,
            "route": form.get("route") or "auto",
            "max_tokens": form.get("max_tokens", "").strip() or None,
            "temperature": form.get("temperature", "").strip() or None,
        }
    )
    quotas = caller_quotas(platform, console.caller)
    if quotas is not None:
        platform.limits.admit(quotas)  # the request budget, as every API request
    arguments: dict[str, Any] = {  # Any: keyword arguments of the service functions
        **common,
        "question": body.question,
        "top_k": body.top_k,
        "deps": platform.query,
        "filter": body.filter,
        "overrides": {"mode": body.mode},
    }
    if not asked.search_only:
        arguments |= {
            "quotas": quotas,
            "route": body.route,
            "options": GenerationOptions(body.max_tokens, body.temperature),
        }
    return arguments


def _answered(result: QueryResult) -> dict[str, Any]:
    payloads = {p.chunk_id: p.payload for p in result.passages}
    return {
        "search_only": False,
        "result": result,
        "citations": [(c, payloads.get(c.chunk_id, {})) for c in result.answer.citations],
        "timings": result.timings_ms,
    }


def _failure(exc: Exception) -> tuple[int, str]:
    if isinstance(exc, json.JSONDecodeError):
        return 422, f"filter: not JSON ({exc.msg})"
    if isinstance(exc, ValidationError):
        return 422, form_error(exc)
    return error_status(exc)


_REFUSALS = (json.JSONDecodeError, ValidationError, ShoalError, RetrievalError)


class AskFields(BaseModel):
    """The Ask form's fields, as typed: ``QueryRequest`` checks them (:func:`_prepare`)."""

    question: str = ""
    filter: str = ""
    top_k: str = ""
    mode: str = ""
    route: str = ""
    max_tokens: str = ""
    temperature: str = ""
    search_only: str = ""


AskForm = Annotated[AskFields, Form()]


@router.get("/namespaces/{name}/ask")
def ask_page(request: Request, name: str, console: ConsoleDep, db: SessionDep) -> Response:
    access = authorize_tenant_scope(console.caller, QUERY)
    namespace = namespaces.get_namespace(db, access=access, name=name)
    return _page(request, namespace, {}, outcome=None)


@router.post("/namespaces/{name}/ask")
def ask(
    request: Request,
    name: str,
    console: FormDep,
    db: SessionDep,
    platform: PlatformDep,
    fields: AskForm,
) -> Response:
    """Answer (or search) as ``POST /v1/namespaces/{ns}/query`` (``/search``) does, counted
    against the key's budgets; htmx gets the result panel alone."""
    asked = _form(fields)
    namespace, common = _arguments(db, console, name)
    status, outcome, error = 200, None, None
    try:
        arguments = _prepare(platform, console, common, asked)
        outcome = _outcome(db, asked, arguments)
    except _REFUSALS as exc:
        status, error = _failure(exc)
    if is_htmx(request):
        return render(request, "_answer.html", status_code=status, outcome=outcome, error=error)
    return _page(request, namespace, asked.form, outcome=outcome, error=error, status_code=status)


@router.post("/namespaces/{name}/ask/stream")
def ask_streamed(
    request: Request,
    name: str,
    console: FormDep,
    db: SessionDep,
    platform: PlatformDep,
    fields: AskForm,
) -> Response:
    """The answer as Server-Sent Events (module docstring); a search-only question, or one
    refused before any text, is the result panel at once."""
    asked = _form(fields)
    _, common = _arguments(db, console, name)
    try:
        arguments = _prepare(platform, console, common, asked)
        if asked.search_only:
            outcome = _outcome(db, asked, arguments)
            return render(request, "_answer.html", outcome=outcome)
        events = stream_answer(db, **arguments)
        start = next(events)
    except _REFUSALS as exc:
        status, error = _failure(exc)
        return render(request, "_answer.html", status_code=status, outcome=None, error=error)
    assert isinstance(start, StreamStart)  # noqa: S101 (stream_answer's contract)
    return EventSourceResponse(closing(_sse(start, events)))


def _outcome(db: Session, asked: _Asked, arguments: dict[str, Any]) -> dict[str, Any]:
    if asked.search_only:
        found = search_namespace(db, **arguments)
        return {"search_only": True, "passages": found.passages, "timings": found.timings_ms}
    return _answered(answer_question(db, **arguments))


def _sse(
    start: StreamStart, events: Generator[StreamStart | Delta | StreamEnd]
) -> Generator[ServerSentEvent]:
    yield _event("route", {"name": start.route_name, "reason": start.route_reason})
    try:
        for event in events:
            if isinstance(event, Delta):
                yield _event("token", {"text": event.text})
            elif isinstance(event, StreamEnd):
                html = _panel(outcome=_answered(event.result), error=None)
                yield _event("outcome", {"html": html})
    except Exception as exc:  # the status is sent: an event is all that can still say it
        log.exception("console_stream_failed")
        _, detail = error_status(exc)
        yield _event("error", {"html": _panel(outcome=None, error=f"generation failed: {detail}")})
    finally:
        events.close()


def _panel(**context: Any) -> str:
    """The result panel, rendered (autoescaped) for an event."""
    return templates.env.get_template("_answer.html").render(**context)


def _event(name: str, data: dict[str, Any]) -> ServerSentEvent:
    return ServerSentEvent(data=json.dumps(data), event=name)


def _page(
    request: Request,
    namespace: Namespace,
    form: dict[str, Any],
    *,
    outcome: dict[str, Any] | None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    return render(
        request,
        "ask.html",
        status_code=status_code,
        namespace=namespace,
        form=form,
        modes=MODES,
        routes=ROUTES,
        outcome=outcome,
        error=error,
    )
