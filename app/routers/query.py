"""``/v1/namespaces/{ns}/query``: a cited answer, or a plain statement that there is none;
``/v1/namespaces/{ns}/search``: the passages alone.

When the search cannot run (the vector store is down, stalled or behind an open breaker), a
query still answers ``200`` at once, ``degraded: true`` with a ``degraded_reason`` and a
``Retry-After`` header: the cached answer to the same query, or one saying there is none.
``/search`` has nothing to fall back on: ``503`` problem+json with ``Retry-After``.

With ``stream: true`` the answer comes as Server-Sent Events:

- ``route``: ``{name, reason}``, before any text;
- ``token``: ``{text}``, pieces of the answer in order;
- ``citations``: ``{citations: [...]}``, as in the JSON answer;
- ``done``: ``{answer, answerable, abstain_reason, route, degraded, degraded_reason, usage,
  timings_ms}``;
  ``timings_ms`` includes ``first_token``, the time to the first token;
- ``error``: ``{title, detail}`` if generation fails after text was sent (before that, a
  failing route falls back and the stream goes on).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Generator
from typing import Any

import structlog
from fastapi import APIRouter, Response
from sqlalchemy.orm import Session
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from app.gateway.deps import CallerDep, PlatformDep, SessionDep, caller_quotas
from app.platform import Platform
from app.schemas.query import QueryAnswer, QueryRequest, SearchQuery, SearchResults
from app.services.keys import QUERY, Caller, authorize_tenant_scope
from app.services.query import answer_question, search_namespace, stream_answer
from app.services.questions import StreamEnd, StreamStart
from retrieval.generation.base import Delta, GenerationOptions

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/v1/namespaces/{ns}", tags=["query"])

ROUTE_HEADER = "X-Shoal-Route"
ROUTE_REASON_HEADER = "X-Shoal-Route-Reason"


@router.post(
    "/query",
    responses={200: {"content": {"text/event-stream": {}}, "description": "with stream: true"}},
)
async def query(
    ns: str,
    body: QueryRequest,
    caller: CallerDep,
    session: SessionDep,
    platform: PlatformDep,
    response: Response,
) -> QueryAnswer:
    # async, with the blocking work in one pool thread: a `def` route would take a second
    # thread hop only to validate its own response model (FastAPI runs that in the pool too).
    return await run_in_threadpool(_query, ns, body, caller, session, platform, response)


def _query(
    ns: str,
    body: QueryRequest,
    caller: Caller,
    session: Session,
    platform: Platform,
    response: Response,
) -> QueryAnswer:
    common: dict[str, Any] = {
        "access": authorize_tenant_scope(caller, QUERY),
        "key_id": caller.key_id,
        "namespace_name": ns,
        "question": body.question,
        "top_k": body.top_k,
        "deps": platform.query,
        "filter": body.filter,
        "overrides": {"mode": body.mode, "rerank": body.rerank},
        "route": body.route,
        "quotas": caller_quotas(platform, caller),
        "options": GenerationOptions(body.max_tokens, body.temperature),
    }
    if body.stream:
        events = stream_answer(session, **common)
        # The route is known before the first token: the headers carry it too.
        start = next(events)
        assert isinstance(start, StreamStart)  # noqa: S101 (stream_answer's contract)
        return EventSourceResponse(  # type: ignore[return-value]  # FastAPI passes it through
            closing(_sse(start, events)),
            headers={
                **route_headers(start.route_name, start.route_reason),
                **retry_after_headers(start.retry_after_s),
            },
        )
    result = answer_question(session, **common)
    response.headers.update(route_headers(result.route_name, result.route_reason))
    response.headers.update(retry_after_headers(result.retry_after_s))
    return QueryAnswer.of(result)


@router.post("/search")
async def search(
    ns: str, body: SearchQuery, caller: CallerDep, session: SessionDep, platform: PlatformDep
) -> SearchResults:
    return await run_in_threadpool(_search, ns, body, caller, session, platform)  # as query


def _search(
    ns: str, body: SearchQuery, caller: Caller, session: Session, platform: Platform
) -> SearchResults:
    found = search_namespace(
        session,
        access=authorize_tenant_scope(caller, QUERY),
        key_id=caller.key_id,
        namespace_name=ns,
        question=body.question,
        top_k=body.top_k,
        deps=platform.query,
        filter=body.filter,
        overrides={"mode": body.mode, "rerank": body.rerank},
    )
    return SearchResults.of(found)


async def closing(events: Generator[ServerSentEvent]) -> AsyncIterator[ServerSentEvent]:
    """``events`` (a blocking generator) in a worker thread, closed however the response ends.

    Starlette iterates a sync generator in a thread pool but never closes it when the client
    goes away; only garbage collection would, later. Closing it at once frees the endpoint the
    stream holds and stops the model.
    """
    try:
        async for event in iterate_in_threadpool(events):
            yield event
    finally:
        await run_in_threadpool(events.close)


def _sse(
    start: StreamStart, events: Generator[StreamStart | Delta | StreamEnd]
) -> Generator[ServerSentEvent]:
    yield _event("route", {"name": start.route_name, "reason": start.route_reason})
    try:
        for event in events:
            if isinstance(event, Delta):
                yield _event("token", {"text": event.text})
            elif isinstance(event, StreamEnd):
                public = QueryAnswer.of(event.result)
                citations = [c.model_dump() for c in public.citations]
                yield _event("citations", {"citations": citations})
                yield _event("done", public.model_dump(exclude={"citations"}))
    except Exception as exc:  # the status is sent: an event is all that can still say it
        log.exception("stream_failed")
        yield _event("error", {"title": "generation failed", "detail": str(exc)})
    finally:
        events.close()


def _event(name: str, data: dict[str, Any]) -> ServerSentEvent:
    return ServerSentEvent(data=json.dumps(data), event=name)


def retry_after_headers(seconds: int | None) -> dict[str, str]:
    """A degraded answer says when asking again may get a full one."""
    return {} if seconds is None else {"Retry-After": str(seconds)}


def route_headers(name: str, reason: str) -> dict[str, str]:
    # Header values must be Latin-1; reasons are ASCII by construction, but be safe.
    return {ROUTE_HEADER: name, ROUTE_REASON_HEADER: reason.encode("ascii", "replace").decode()}
