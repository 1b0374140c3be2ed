"""Answering a question in a namespace, in one flow: prepare (the namespace, the filter) →
search (:func:`retrieval.search.search`) → judge (the evidence gate) → plan the route once and
reserve its tokens → generate → settle and record.

:func:`answer_question` and :func:`stream_answer` run the same flow (:func:`_answer_events`);
they differ only in how its events reach the caller: the first returns the last one's result,
the second hands the events on as they come.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Generator, Iterator, Mapping
from contextlib import closing
from typing import Any

from sqlalchemy.orm import Session

from app.db.models import Namespace
from app.metrics import EMBEDDING_CACHE, TIME_TO_FIRST_TOKEN
from app.services.abstention import abstention, judge
from app.services.answers import AnswerSlot, CachedResult, QueryResult, degraded, open_slot
from app.services.costs import observe_route, observe_stages, record, reserved
from app.services.keys import TenantAccess
from app.services.limits import Quotas
from app.services.questions import Ask, Event, QueryDeps, StreamEnd, StreamStart
from app.services.search import resolve, retrieve
from retrieval.errors import EmbeddingUnavailableError, StoreUnavailableError
from retrieval.filters import Expr
from retrieval.generation.base import (
    DEFAULT_OPTIONS,
    Answer,
    Delta,
    GenerationOptions,
    StreamEvent,
)
from retrieval.generation.routing import Requested, RouteChoice
from retrieval.search import Retrieved

# What keeps a query from searching; it then answers degraded (see answer_question).
_OUTAGES = (StoreUnavailableError, EmbeddingUnavailableError)


def search_namespace(
    session: Session,
    *,
    access: TenantAccess,
    key_id: str,
    namespace_name: str,
    question: str,
    top_k: int | None,
    deps: QueryDeps,
    filter: Any = None,
    overrides: Mapping[str, Any] | None = None,
) -> Retrieved:
    """The passages ``question`` retrieves from the tenant's namespace, without an answer:
    for clients that bring their own model. Counted as a request in the usage, with no tokens.

    Raises:
        NotFoundError: no such namespace for this tenant, or one ``access`` may not use.
        InvalidRequestError: the filter does not fit the namespace's indexed fields.
        QuestionTooLongError: the question has more tokens than the embedding model reads.
        StoreUnavailableError: the vector store failed.
    """
    started = time.perf_counter()
    request = Ask(access, key_id, namespace_name, question, top_k, filter, overrides)
    namespace, expr = resolve(
        session, access, namespace_name, filter, model_id=deps.embedder.model_id
    )
    found = _search(session, deps, namespace, request, expr)
    record(deps.usage, access.tenant_id, key_id)
    observe_stages(found.timings_ms)
    found.timings_ms["total"] = _ms_since(started)
    return found


def answer_question(
    session: Session,
    *,
    access: TenantAccess,
    key_id: str,
    namespace_name: str,
    question: str,
    top_k: int | None,
    deps: QueryDeps,
    filter: Any = None,
    overrides: Mapping[str, Any] | None = None,
    route: Requested = "auto",
    quotas: Quotas | None = None,
    options: GenerationOptions = DEFAULT_OPTIONS,
) -> QueryResult:
    """Answer ``question`` from the tenant's namespace, with citations, or abstain.

    With ``quotas``, the answer's model tokens are reserved against the caller's token
    budgets before generating, and settled with the real usage after. ``options`` go to the
    LLM backends (a smaller ``max_tokens`` also makes the reservation smaller).

    When the search cannot run (the vector store is down, stalled or its breaker open, or the
    embedding model fails), the result is *degraded* instead of an error: the cached answer
    to the same query if there is one, else an answer that says why there is none; both carry
    ``degraded_reason`` and ``retry_after_s``.

    Raises:
        NotFoundError: no such namespace for this tenant, or one ``access`` may not use.
        InvalidRequestError: the filter does not fit the namespace's indexed fields.
        RateLimitedError: the token budget cannot cover the answer.
    """
    result = None
    ask = Ask(
        access, key_id, namespace_name, question, top_k, filter, overrides, route, quotas, options
    )
    for event in _answer_events(session, deps, ask, streaming=False):
        if isinstance(event, StreamEnd):
            result = event.result
    assert result is not None  # noqa: S101 (a whole answer always ends the flow)
    return result


def stream_answer(
    session: Session,
    *,
    access: TenantAccess,
    key_id: str,
    namespace_name: str,
    question: str,
    top_k: int | None,
    deps: QueryDeps,
    filter: Any = None,
    overrides: Mapping[str, Any] | None = None,
    route: Requested = "auto",
    quotas: Quotas | None = None,
    options: GenerationOptions = DEFAULT_OPTIONS,
) -> Generator[Event]:
    """Like :func:`answer_question`, streamed: everything up to the route's first event runs
    now (its errors raise here), the rest of the generation as the returned iterator is
    consumed.

    The iterator yields a :class:`StreamStart`, then :class:`Delta` pieces of the answer, then a
    :class:`StreamEnd`. A degraded answer (see :func:`answer_question`) comes whole, as one delta.
    """
    ask = Ask(
        access, key_id, namespace_name, question, top_k, filter, overrides, route, quotas, options
    )
    events = _answer_events(session, deps, ask, streaming=True)
    start = next(events)
    return _replay(start, events)


def _answer_events(
    session: Session, deps: QueryDeps, ask: Ask, *, streaming: bool
) -> Generator[Event]:
    """The answer flow, as the events a stream sends; ``streaming`` has the backend send its
    text in pieces as it writes it, else whole with the answer."""
    started = time.perf_counter()
    tenant_id = ask.access.tenant_id
    namespace, expr = resolve(
        session, ask.access, ask.namespace_name, ask.filter, model_id=deps.embedder.model_id
    )
    slot = _open_slot(deps, namespace, ask)
    try:
        found = _search(session, deps, namespace, ask, expr)
        generating = time.perf_counter()
        verdict = judge(deps.gate, tenant_id, ask.question, found)
    except _OUTAGES as exc:  # the gate embeds the candidate sentences too
        yield from _degraded(session, deps, ask, slot, exc, started)
        return
    if verdict.answerable:
        dispatcher = deps.catalog.dispatcher(namespace.routes, scope=tenant_id)
        plan = dispatcher.plan(ask.question, found.passages, ask.route)
        budget = dispatcher.token_budget(plan, ask.options) if ask.quotas and deps.limits else 0
        events = dispatcher.generate(plan, found.vector, options=ask.options, stream=streaming)
    else:
        budget, events = 0, abstention(verdict, streaming=streaming)
    choice: RouteChoice | None = None
    answer: Answer | None = None
    first_token: float | None = None
    outage: Exception | None = None
    with closing(events), reserved(deps.limits, ask.quotas, budget) as hold:
        try:
            # Starts the backend: the extractive one embeds its sentences here (in the
            # tenant's cache entries: the dispatcher's backend is scoped, whenever it runs).
            first = next(events)
        except _OUTAGES as exc:  # nothing generated: the reservation settles at 0
            outage = exc
        else:
            assert isinstance(first, RouteChoice)  # noqa: S101 (Dispatcher.generate's contract)
            choice, hold.answering = first, True
            yield StreamStart(choice.name, choice.reason)
            try:
                answer, first_token = yield from _relay(events, choice, started)
            finally:
                if answer is None:
                    # The client left or the backend failed mid-answer: the request still
                    # counts, and its reservation is kept whole (its tokens are unknown).
                    record(deps.usage, tenant_id, ask.key_id)
            hold.used = answer.prompt_tokens + answer.completion_tokens if answer else 0
    if outage is not None:
        yield from _degraded(session, deps, ask, slot, outage, started)
        return
    if answer is None or choice is None:
        return
    timings = {**found.timings_ms, "generate": _ms_since(generating)}
    timings["total"] = _ms_since(started)
    if first_token is not None:
        timings["first_token"] = first_token
    record(deps.usage, tenant_id, ask.key_id, answer)
    observe_route(choice, ask.route, answer)
    observe_stages(timings)
    result = QueryResult(
        answer, choice.name, choice.reason, found.passages, timings, found.cache_hit
    )
    if slot is not None and not choice.fallbacks:  # a fallback's answer is not a good one
        slot.store(CachedResult(answer, choice.name, choice.reason, found.passages))
    yield StreamEnd(result)


def _relay(
    events: Iterator[RouteChoice | StreamEvent], choice: RouteChoice, started: float
) -> Generator[Delta, None, tuple[Answer | None, float | None]]:
    """Hand the backend's text on as it comes; return its answer (None if it sent none) and
    when its first text came (milliseconds since ``started``)."""
    answer, first_token = None, None
    for event in events:
        if isinstance(event, Delta):
            if first_token is None and event.text:
                first_token = _ms_since(started)
                TIME_TO_FIRST_TOKEN.labels(choice.name).observe(first_token / 1000)
            yield event
        elif isinstance(event, Answer):
            answer = event
    return answer, first_token


def _replay(start: Event, events: Generator[Event]) -> Generator[Event]:
    """``start``, then the rest of ``events``; closing this closes them."""
    try:
        yield start
        yield from events
    finally:
        events.close()


def _search(
    session: Session, deps: QueryDeps, namespace: Namespace, ask: Ask, expr: Expr | None
) -> Retrieved:
    found = retrieve(
        session,
        deps.searcher,
        namespace,
        question=ask.question,
        top_k=ask.top_k or deps.default_top_k,
        filter=expr,
        overrides=ask.overrides,
    )
    EMBEDDING_CACHE.labels("query", "hit" if found.cache_hit else "miss").inc()
    return found


def _open_slot(deps: QueryDeps, namespace: Namespace, ask: Ask) -> AnswerSlot | None:
    return open_slot(
        deps.answers,
        namespace,
        question=ask.question,
        filter=ask.filter,
        top_k=ask.top_k or deps.default_top_k,
        route=ask.route,
        overrides=ask.overrides,
        options=ask.options,
    )


def _degraded(
    session: Session,
    deps: QueryDeps,
    ask: Ask,
    slot: AnswerSlot | None,
    exc: Exception,
    started: float,
) -> Generator[Event]:
    """The degraded answer (:func:`app.services.answers.degraded`), whole, as events."""
    result = degraded(session, slot, exc)
    record(deps.usage, ask.access.tenant_id, ask.key_id)
    result = dataclasses.replace(result, timings_ms={"total": _ms_since(started)})
    yield StreamStart(result.route_name, result.route_reason, result.retry_after_s)
    if result.answer.text:
        yield Delta(result.answer.text)
    yield StreamEnd(result)


def _ms_since(mark: float) -> float:
    return round((time.perf_counter() - mark) * 1000, 2)
