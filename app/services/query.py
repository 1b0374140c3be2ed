"""Answering a question in a namespace: embed (cached) → search (tenant-filtered, metadata
filter, dense/lexical/hybrid, visible documents only) → rerank → answer."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from app.db.models import Namespace
from app.errors import InvalidRequestError
from app.metrics import (
    DEGRADED_ANSWERS,
    EMBEDDING_CACHE,
    GENERATION_TOKENS,
    ROUTE_DECISIONS,
    STAGE_SECONDS,
    TIME_TO_FIRST_TOKEN,
)
from app.services.answers import (
    AnswerSlot,
    CachedResult,
    open_slot,
    outage,
    unavailable_answer,
)
from app.services.keys import TenantAccess
from app.services.limits import Quotas, RateLimits, Reservation
from app.services.namespaces import get_namespace
from app.services.routing import RouterFactory
from app.services.usage import UsageLedger
from app.services.versions import visible_documents
from retrieval.answers import AnswerCache
from retrieval.cache import EmbeddingCache, embed_query, normalise_query
from retrieval.config import SearchOptions
from retrieval.embedding import ChunkEmbedder
from retrieval.errors import EmbeddingUnavailableError, StoreUnavailableError
from retrieval.filters import Expr, FilterError, parse_filter
from retrieval.generation.base import (
    DEFAULT_OPTIONS,
    Answer,
    Delta,
    GenerationOptions,
    Passage,
    StreamEvent,
)
from retrieval.generation.evidence import EvidenceGate, Verdict
from retrieval.generation.extractive import ABSTAIN_TEXT, abstain
from retrieval.rerank import Reranker
from retrieval.resilience import GuardedStore
from retrieval.routing import Requested, RouteChoice, Router
from retrieval.search import MAX_LIMIT, search
from retrieval.stores.base import Hit, SearchRequest, VectorStore

# Searches of one question while hits keep being dropped (see _search_visible).
_SEARCH_ATTEMPTS = 3
# Payload key under which documents' metadata lives, and so the prefix of filter fields.
METADATA_PREFIX = "metadata."
# What keeps a query from searching; it then answers degraded (see answer_question).
_OUTAGES = (StoreUnavailableError, EmbeddingUnavailableError)


@dataclass(frozen=True)
class QueryResult:
    answer: Answer
    route_name: str
    route_reason: str
    passages: list[Passage] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    cache_hit: bool = False
    # Set when the search could not run: why, and when to ask again (seconds).
    degraded_reason: str | None = None
    retry_after_s: int | None = None

    @property
    def degraded(self) -> bool:
        return self.degraded_reason is not None


@dataclass(frozen=True)
class QueryDeps:
    store: VectorStore
    embedder: ChunkEmbedder  # knows its token limit, which questions are held to
    cache: EmbeddingCache
    default_top_k: int
    routers: RouterFactory
    search: SearchOptions = field(default_factory=SearchOptions)
    reranker: Reranker | None = None
    rerank_candidates: int = 30
    usage: UsageLedger | None = None  # None: usage is not recorded (evaluation runs)
    limits: RateLimits | None = None  # None: no token budgets
    answers: AnswerCache | None = None  # None: no cached answers while the store is down
    gate: EvidenceGate | None = None  # None: each backend decides alone whether to answer


@dataclass(frozen=True)
class Retrieved:
    """What the search stage found for a question, and what it took."""

    passages: list[Passage]
    vector: list[float]
    cache_hit: bool
    options: SearchOptions
    timings_ms: dict[str, float]


def parse_query_filter(namespace: Namespace, raw: Any) -> Expr | None:
    """The query's JSON filter checked against the namespace's indexed fields.

    Raises:
        InvalidRequestError: the filter is invalid; ``field`` says where (a 422).
    """
    if raw is None:
        return None
    try:
        return parse_filter(raw, namespace.indexed_fields, key_prefix=METADATA_PREFIX)
    except FilterError as exc:
        raise InvalidRequestError(str(exc), field=exc.field) from exc


def retrieve(
    session: Session,
    deps: QueryDeps,
    namespace: Namespace,
    *,
    question: str,
    top_k: int,
    filter: Expr | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Retrieved:
    """The ``top_k`` best visible passages of ``namespace`` for ``question``, best first.

    Each passage's ``score`` is its cosine with the question (whatever ranked it), which is
    what abstention and citations compare.

    Raises:
        InvalidRequestError: the question has more tokens than the embedding model reads.
        StoreUnavailableError: the vector store failed, timed out, or its breaker is open (then
            at once, before the question is embedded).
        EmbeddingUnavailableError: the embedding model failed.
    """
    _check_question_length(deps.embedder, question)
    if isinstance(deps.store, GuardedStore):
        deps.store.check_open()
    options = deps.search.overlay(namespace.search).overlay(overrides or {})
    timings: dict[str, float] = {}
    mark = time.perf_counter()
    vector, cache_hit = embed_query(deps.embedder, deps.cache, question, scope=namespace.tenant_id)
    timings["embed"] = _ms_since(mark)

    reranking = options.rerank and deps.reranker is not None
    wanted = max(top_k, deps.rerank_candidates) if reranking else top_k
    request = SearchRequest(
        vector,
        limit=wanted,
        filter=filter,
        text=question if options.mode != "dense" else None,
        mode=options.mode,
        candidates=max(options.candidates, wanted),
        rrf_k=options.rrf_k,
        dense_weight=options.dense_weight,
        lexical_weight=options.lexical_weight,
        fusion=options.fusion,
    )
    mark = time.perf_counter()
    hits = _search_visible(session, deps.store, namespace, request)  # commits its reads
    timings["search"] = _ms_since(mark)
    passages = [
        Passage(
            chunk_id=hit.id,
            document_id=str(hit.payload["document_id"]),
            text=str(hit.payload.get("text", "")),
            score=hit.similarity,
            payload=hit.payload,
        )
        for hit in hits
    ]
    if reranking and deps.reranker is not None:
        mark = time.perf_counter()
        passages = deps.reranker.rerank(question, passages, top_k)
        timings["rerank"] = _ms_since(mark)
    return Retrieved(passages[:top_k], vector, cache_hit, options, timings)


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
        StoreUnavailableError: the vector store failed.
    """
    started = time.perf_counter()
    tenant_id = access.tenant_id
    _, found = _prepare(session, access, namespace_name, question, top_k, deps, filter, overrides)
    _record(deps, tenant_id, key_id)
    _observe_stages(found.timings_ms)
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
    started = time.perf_counter()
    tenant_id = access.tenant_id
    namespace, expr = _resolve(session, access, namespace_name, filter, deps)
    slot = _open_slot(deps, namespace, question, filter, top_k, overrides, route, options)
    try:
        found = _retrieve(session, deps, namespace, question, top_k, expr, overrides)
    except _OUTAGES as exc:
        return _degraded(session, deps, slot, exc, tenant_id, key_id, started)
    timings = dict(found.timings_ms)
    mark = time.perf_counter()
    try:
        verdict = _judge(deps, namespace, question, found)
    except _OUTAGES as exc:  # the gate embeds the candidate sentences
        return _degraded(session, deps, slot, exc, tenant_id, key_id, started)
    if not verdict.answerable:
        answer, choice, reservation = _abstention(verdict), _abstained(verdict), None
    else:
        router = deps.routers.router(namespace.routes, scope=namespace.tenant_id)
        reservation = _reserve(deps, quotas, namespace, router, question, found, route, options)
        try:
            answer, choice = router.answer(
                question, found.vector, found.passages, route, options=options
            )
        except _OUTAGES as exc:  # the extractive answer embeds its sentences
            _settle(deps, reservation, 0)
            return _degraded(session, deps, slot, exc, tenant_id, key_id, started)
        except BaseException:
            _settle(deps, reservation, 0)
            raise
    timings["generate"] = _ms_since(mark)
    timings["total"] = _ms_since(started)
    _settle(deps, reservation, answer.prompt_tokens + answer.completion_tokens)
    _account(deps, tenant_id, key_id, answer, choice, route, timings)
    result = _result(answer, choice, found, timings)
    _remember(slot, result, choice)
    return result


@dataclass(frozen=True)
class StreamStart:
    """The first event of a streamed answer: the route chosen, before any text."""

    route_name: str
    route_reason: str
    retry_after_s: int | None = None  # set when the answer is degraded


@dataclass(frozen=True)
class StreamEnd:
    """The last event of a streamed answer: the whole answer and what it cost."""

    result: QueryResult


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
) -> Generator[StreamStart | Delta | StreamEnd]:
    """Like :func:`answer_question`, streamed: retrieval runs now (its errors raise here),
    generation as the returned iterator is consumed.

    The iterator yields a :class:`StreamStart`, then :class:`Delta` pieces of the answer, then a
    :class:`StreamEnd`. Tokens are reserved before the first event, settled after the last.
    A degraded answer (see :func:`answer_question`) comes whole, as one delta.
    """
    started = time.perf_counter()
    tenant_id = access.tenant_id
    namespace, expr = _resolve(session, access, namespace_name, filter, deps)
    slot = _open_slot(deps, namespace, question, filter, top_k, overrides, route, options)
    try:
        found = _retrieve(session, deps, namespace, question, top_k, expr, overrides)
    except _OUTAGES as exc:
        return _degraded_stream(_degraded(session, deps, slot, exc, tenant_id, key_id, started))
    try:
        verdict = _judge(deps, namespace, question, found)
    except _OUTAGES as exc:  # the gate embeds the candidate sentences
        return _degraded_stream(_degraded(session, deps, slot, exc, tenant_id, key_id, started))
    if not verdict.answerable:
        abstention = _abstained(verdict)
        events: Iterator[RouteChoice | StreamEvent] = iter(
            [Delta(ABSTAIN_TEXT), _abstention(verdict)]
        )
        return _stream_events(
            events, abstention, found, started, tenant_id, key_id, route, deps, None, slot
        )
    router = deps.routers.router(namespace.routes, scope=namespace.tenant_id)
    reservation = _reserve(deps, quotas, namespace, router, question, found, route, options)
    try:
        events = router.stream(question, found.vector, found.passages, route, options=options)
        # Pull the route decision now, so that a failure to plan is an error of the
        # request. It starts the backend too: the extractive one embeds its sentences here
        # (in the tenant's cache entries: the router's backend is scoped, whenever it runs).
        choice = next(events)
    except _OUTAGES as exc:  # the extractive answer embeds its sentences
        _settle(deps, reservation, 0)
        return _degraded_stream(_degraded(session, deps, slot, exc, tenant_id, key_id, started))
    except BaseException:
        _settle(deps, reservation, 0)
        raise
    assert isinstance(choice, RouteChoice)  # noqa: S101 (Router.stream's contract)
    return _stream_events(
        events, choice, found, started, tenant_id, key_id, route, deps, reservation, slot
    )


def _stream_events(
    events: Iterator[RouteChoice | StreamEvent],
    choice: RouteChoice,
    found: Retrieved,
    started: float,
    tenant_id: str,
    key_id: str,
    route: Requested,
    deps: QueryDeps,
    reservation: Reservation | None,
    slot: AnswerSlot | None,
) -> Generator[StreamStart | Delta | StreamEnd]:
    yield StreamStart(choice.name, choice.reason)
    generating = time.perf_counter()
    first_token: float | None = None
    accounted = False
    try:
        for event in events:
            if isinstance(event, Delta):
                if first_token is None and event.text:
                    first_token = _ms_since(started)
                    TIME_TO_FIRST_TOKEN.labels(choice.name).observe(first_token / 1000)
                yield event
            elif isinstance(event, Answer):
                timings = dict(found.timings_ms)
                timings["generate"] = _ms_since(generating)
                timings["total"] = _ms_since(started)
                if first_token is not None:
                    timings["first_token"] = first_token
                _settle(deps, reservation, event.prompt_tokens + event.completion_tokens)
                _account(deps, tenant_id, key_id, event, choice, route, timings)
                accounted = True
                result = _result(event, choice, found, timings)
                _remember(slot, result, choice)
                yield StreamEnd(result)
    finally:
        # A client that disconnects closes this generator: close the route's too, which frees
        # its endpoint (the outstanding count) and stops the model.
        close = getattr(events, "close", None)
        if close is not None:
            close()
        if not accounted:
            # The client left or the backend failed mid-answer: the request still counts.
            # Its tokens are unknown (backends report usage with the final answer), so the
            # reservation is kept whole: the model may well have spent it.
            _record(deps, tenant_id, key_id)


def _judge(deps: QueryDeps, namespace: Namespace, question: str, found: Retrieved) -> Verdict:
    """The evidence gate's verdict on ``found``, under the namespace's abstention options."""
    if deps.gate is None:
        return Verdict(True)
    return deps.gate.scoped(namespace.tenant_id).judge(
        question,
        found.vector,
        found.passages,
        min_score=found.options.min_score,
        threshold=found.options.evidence_threshold,
    )


def _abstention(verdict: Verdict) -> Answer:
    """The answer when the gate abstains: no backend runs, no model token is spent."""
    return abstain(verdict.reason or "weak_evidence")


def _abstained(verdict: Verdict) -> RouteChoice:
    """The route of an answer the gate abstained on: none, and why."""
    why = {
        "no_passages": "the search found no passage",
        "below_min_score": "no passage reaches the namespace's min_score",
    }.get(verdict.reason or "", "the passages do not hold the answer")
    if verdict.probability is not None:
        why = f"{why} (evidence {verdict.probability:.2f})"
    return RouteChoice("none", f"abstained before generating: {why}", "none")


def _result(
    answer: Answer, choice: RouteChoice, found: Retrieved, timings: dict[str, float]
) -> QueryResult:
    return QueryResult(
        answer=answer,
        route_name=choice.name,
        route_reason=choice.reason,
        passages=found.passages,
        timings_ms=timings,
        cache_hit=found.cache_hit,
    )


def _prepare(
    session: Session,
    access: TenantAccess,
    namespace_name: str,
    question: str,
    top_k: int | None,
    deps: QueryDeps,
    filter: Any,
    overrides: Mapping[str, Any] | None,
) -> tuple[Namespace, Retrieved]:
    namespace, expr = _resolve(session, access, namespace_name, filter, deps)
    return namespace, _retrieve(session, deps, namespace, question, top_k, expr, overrides)


def _resolve(
    session: Session, access: TenantAccess, namespace_name: str, filter: Any, deps: QueryDeps
) -> tuple[Namespace, Expr | None]:
    # A question embedded by another model or runtime than the namespace's would be compared
    # with vectors it does not share a space with: refused, never answered with noise.
    namespace = get_namespace(
        session, access=access, name=namespace_name, embedded_by=deps.embedder.model_id
    )
    expr = parse_query_filter(namespace, filter)
    # On SQLite every transaction holds the database's write lock (BEGIN IMMEDIATE): end this
    # one before the model and the vector store work, so that concurrent queries, uploads and
    # indexing wait only for each other's brief reads and writes, never for an embedding.
    session.commit()
    return namespace, expr


def _retrieve(
    session: Session,
    deps: QueryDeps,
    namespace: Namespace,
    question: str,
    top_k: int | None,
    expr: Expr | None,
    overrides: Mapping[str, Any] | None,
) -> Retrieved:
    found = retrieve(
        session,
        deps,
        namespace,
        question=question,
        top_k=top_k or deps.default_top_k,
        filter=expr,
        overrides=overrides,
    )
    EMBEDDING_CACHE.labels("query", "hit" if found.cache_hit else "miss").inc()
    return found


def _open_slot(
    deps: QueryDeps,
    namespace: Namespace,
    question: str,
    filter: Any,
    top_k: int | None,
    overrides: Mapping[str, Any] | None,
    route: Requested,
    options: GenerationOptions,
) -> AnswerSlot | None:
    return open_slot(
        deps.answers,
        namespace,
        question=question,
        filter=filter,
        top_k=top_k or deps.default_top_k,
        route=route,
        overrides=overrides,
        options=options,
    )


def _remember(slot: AnswerSlot | None, result: QueryResult, choice: RouteChoice) -> None:
    """File a good answer for when the store is down; a fallback's answer is not one."""
    if slot is not None and not choice.fallbacks:
        slot.store(
            CachedResult(result.answer, result.route_name, result.route_reason, result.passages)
        )


def _degraded(
    session: Session,
    deps: QueryDeps,
    slot: AnswerSlot | None,
    exc: Exception,
    tenant_id: str,
    key_id: str,
    started: float,
) -> QueryResult:
    """The answer when the search cannot run: the cached one, else one saying why."""
    reason, retry_after_s = outage(exc)
    cached = slot.load(session) if slot is not None else None
    session.commit()  # the visibility check's transaction (SQLite's write lock)
    _record(deps, tenant_id, key_id)
    DEGRADED_ANSWERS.labels("cache" if cached else "none").inc()
    if cached is not None:
        reason = f"{reason}; served the cached answer"
        answer = cached.answer
        route_name, route_reason = cached.route_name, f"cached answer ({cached.route_reason})"
        passages = cached.passages
    else:
        answer, passages = unavailable_answer(reason, retry_after_s), []
        route_name, route_reason = "none", f"no answer: {reason}"
    return QueryResult(
        answer=answer,
        route_name=route_name,
        route_reason=route_reason,
        passages=passages,
        timings_ms={"total": _ms_since(started)},
        degraded_reason=reason,
        retry_after_s=retry_after_s,
    )


def _degraded_stream(result: QueryResult) -> Generator[StreamStart | Delta | StreamEnd]:
    yield StreamStart(result.route_name, result.route_reason, result.retry_after_s)
    if result.answer.text:
        yield Delta(result.answer.text)
    yield StreamEnd(result)


def _reserve(
    deps: QueryDeps,
    quotas: Quotas | None,
    namespace: Namespace,
    router: Router,
    question: str,
    found: Retrieved,
    requested: Requested,
    options: GenerationOptions,
) -> Reservation | None:
    """Reserve the most tokens the planned route may spend (:meth:`RouterFactory.token_budget`).

    Raises:
        RateLimitedError: the caller's token budget cannot cover them.
    """
    if deps.limits is None or quotas is None:
        return None
    chain, _ = router.plan(question, found.passages, requested)
    tokens = deps.routers.token_budget(
        namespace.routes, chain[0], question, found.passages, options
    )
    reservation, _ = deps.limits.reserve(quotas, tokens)
    return reservation


def _settle(deps: QueryDeps, reservation: Reservation | None, used: int) -> None:
    if deps.limits is not None:
        deps.limits.settle(reservation, used)


def _record(
    deps: QueryDeps, tenant_id: str, key_id: str, prompt_tokens: int = 0, completion_tokens: int = 0
) -> None:
    if deps.usage is not None:
        deps.usage.add(
            tenant_id=tenant_id,
            key_id=key_id,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
        )


def _account(
    deps: QueryDeps,
    tenant_id: str,
    key_id: str,
    answer: Answer,
    choice: RouteChoice,
    requested: Requested,
    timings: Mapping[str, float],
) -> None:
    _record(deps, tenant_id, key_id, answer.prompt_tokens, answer.completion_tokens)
    decided_by = "auto" if requested == "auto" else "requested"
    ROUTE_DECISIONS.labels(choice.name, decided_by, str(bool(choice.fallbacks)).lower()).inc()
    GENERATION_TOKENS.labels(choice.name, "prompt").inc(answer.prompt_tokens)
    GENERATION_TOKENS.labels(choice.name, "completion").inc(answer.completion_tokens)
    _observe_stages(timings)


def _observe_stages(timings: Mapping[str, float]) -> None:
    for stage in ("embed", "search", "rerank", "generate"):
        if stage in timings:
            STAGE_SECONDS.labels(stage).observe(timings[stage] / 1000)


def _search_visible(
    session: Session, store: VectorStore, namespace: Namespace, request: SearchRequest
) -> list[Hit]:
    """The ``request.limit`` best hits whose documents the database says are visible.

    The store may hold points no query should cite: a version not yet published, a replaced
    version or a deleted document whose point removal is pending or failed
    (:mod:`app.services.versions`). Over-fetching keeps those from starving the answer.

    A version swap that commits between the search and the visibility check would leave
    neither version: the old one's hits are dropped, and the search ran before the new one's
    points were written. So while the check drops hits, search again (bounded; orphaned points
    cost their namespace's queries the extra searches until removed).
    """
    wanted = request.limit
    request = dataclasses.replace(request, limit=min(wanted * 2 + 4, MAX_LIMIT))
    kept: list[Hit] = []
    for _ in range(_SEARCH_ATTEMPTS):
        hits = search(
            store,
            namespace.collection,
            request,
            tenant_id=namespace.tenant_id,
            namespace_id=namespace.id,
        )
        visible = visible_documents(session, {str(h.payload["document_id"]) for h in hits})
        # End the read's transaction before the next search: on SQLite it holds the write lock,
        # and a stalled store would hold every writer for as long as the search waits.
        session.commit()
        kept = [h for h in hits if str(h.payload["document_id"]) in visible]
        if len(kept) == len(hits):
            break
    return kept[:wanted]


def _check_question_length(embedder: ChunkEmbedder, question: str) -> None:
    """Refuse a question the model would truncate (a 422 naming it, not a 500)."""
    text = normalise_query(question)
    # A word piece covers at least one character: shorter texts cannot exceed the limit
    # (two special tokens included), and most questions are, so most skip the tokenizer.
    if len(text) + 2 <= embedder.max_seq_length:
        return
    tokens = embedder.count_tokens(text)
    if tokens > embedder.max_seq_length:
        raise InvalidRequestError(
            f"the question has {tokens} tokens; {embedder.model_id} reads at most "
            f"{embedder.max_seq_length}",
            field="question",
        )


def _ms_since(mark: float) -> float:
    return round((time.perf_counter() - mark) * 1000, 2)
