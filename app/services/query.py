"""Answering a question in a namespace: embed (cached) → search (tenant-filtered, metadata
filter, dense/lexical/hybrid, visible documents only) → rerank → answer."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from app.db.models import Namespace
from app.errors import InvalidRequestError
from app.metrics import (
    EMBEDDING_CACHE,
    GENERATION_TOKENS,
    ROUTE_DECISIONS,
    STAGE_SECONDS,
    TIME_TO_FIRST_TOKEN,
)
from app.services.namespaces import get_namespace
from app.services.routing import RouterFactory
from app.services.usage import record_usage
from app.services.versions import visible_documents
from retrieval.cache import EmbeddingCache, cache_scope, embed_query
from retrieval.embedding import Embedder
from retrieval.filters import Expr, FilterError, parse_filter
from retrieval.generation.base import Answer, Delta, Passage, StreamEvent
from retrieval.rerank import Reranker
from retrieval.routing import Requested, RouteChoice
from retrieval.search import MAX_LIMIT, search
from retrieval.stores.base import Fusion, Hit, SearchMode, SearchRequest, VectorStore

# Searches of one question while hits keep being dropped (see _search_visible).
_SEARCH_ATTEMPTS = 3
# Payload key under which documents' metadata lives, and so the prefix of filter fields.
METADATA_PREFIX = "metadata."


@dataclass(frozen=True)
class SearchOptions:
    """How one query searches: the server's defaults, then the namespace's, then the query's."""

    mode: SearchMode = "hybrid"
    candidates: int = 100
    rrf_k: int = 60
    dense_weight: float = 1.0
    lexical_weight: float = 1.0
    fusion: Fusion = "dbsf"
    rerank: bool = False

    def overlay(self, overrides: Mapping[str, Any]) -> SearchOptions:
        """These options with every non-None entry of ``overrides`` that names a field."""
        names = {f.name for f in dataclasses.fields(self)}
        changes = {k: v for k, v in overrides.items() if k in names and v is not None}
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class QueryResult:
    answer: Answer
    route_name: str
    route_reason: str
    passages: list[Passage] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    cache_hit: bool = False


@dataclass(frozen=True)
class QueryDeps:
    store: VectorStore
    embedder: Embedder
    cache: EmbeddingCache
    default_top_k: int
    routers: RouterFactory
    search: SearchOptions = SearchOptions()
    reranker: Reranker | None = None
    rerank_candidates: int = 30


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
        StoreUnavailableError: the vector store failed.
    """
    options = deps.search.overlay(namespace.search).overlay(overrides or {})
    timings: dict[str, float] = {}
    mark = time.perf_counter()
    vector, cache_hit = embed_query(deps.embedder, deps.cache, question)
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
    hits = _search_visible(session, deps.store, namespace, request)
    # The visibility check began a transaction, and on SQLite that holds the write lock: end it
    # before reranking or generating.
    session.commit()
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
    tenant_id: str,
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
        NotFoundError: no such namespace for this tenant.
        InvalidRequestError: the filter does not fit the namespace's indexed fields.
        StoreUnavailableError: the vector store failed.
    """
    started = time.perf_counter()
    with cache_scope(tenant_id):
        _, found = _prepare(
            session, tenant_id, namespace_name, question, top_k, deps, filter, overrides
        )
    record_usage(session, tenant_id=tenant_id, key_id=key_id, prompt_tokens=0, completion_tokens=0)
    _observe_stages(found.timings_ms)
    found.timings_ms["total"] = _ms_since(started)
    return found


def answer_question(
    session: Session,
    *,
    tenant_id: str,
    key_id: str,
    namespace_name: str,
    question: str,
    top_k: int | None,
    deps: QueryDeps,
    filter: Any = None,
    overrides: Mapping[str, Any] | None = None,
    route: Requested = "auto",
) -> QueryResult:
    """Answer ``question`` from the tenant's namespace, with citations, or abstain.

    Raises:
        NotFoundError: no such namespace for this tenant.
        InvalidRequestError: the filter does not fit the namespace's indexed fields.
        StoreUnavailableError: the vector store failed.
    """
    started = time.perf_counter()
    with cache_scope(tenant_id):
        namespace, found = _prepare(
            session, tenant_id, namespace_name, question, top_k, deps, filter, overrides
        )
        router = deps.routers.router(namespace.routes)
        timings = dict(found.timings_ms)
        mark = time.perf_counter()
        answer, choice = router.answer(question, found.vector, found.passages, route)
    timings["generate"] = _ms_since(mark)
    timings["total"] = _ms_since(started)
    _account(session, tenant_id, key_id, answer, choice, route, timings)
    return _result(answer, choice, found, timings)


@dataclass(frozen=True)
class StreamStart:
    """The first event of a streamed answer: the route chosen, before any text."""

    route_name: str
    route_reason: str


@dataclass(frozen=True)
class StreamEnd:
    """The last event of a streamed answer: the whole answer and what it cost."""

    result: QueryResult


def stream_answer(
    session: Session,
    *,
    tenant_id: str,
    key_id: str,
    namespace_name: str,
    question: str,
    top_k: int | None,
    deps: QueryDeps,
    sessions: Callable[[], Session],
    filter: Any = None,
    overrides: Mapping[str, Any] | None = None,
    route: Requested = "auto",
) -> Generator[StreamStart | Delta | StreamEnd]:
    """Like :func:`answer_question`, streamed: retrieval runs now (its errors raise here),
    generation as the returned iterator is consumed.

    The iterator yields a :class:`StreamStart`, then :class:`Delta` pieces of the answer, then a
    :class:`StreamEnd`. It records usage through a new session from ``sessions``, since the
    request's own session is closed by then.
    """
    started = time.perf_counter()
    with cache_scope(tenant_id):
        namespace, found = _prepare(
            session, tenant_id, namespace_name, question, top_k, deps, filter, overrides
        )
        router = deps.routers.router(namespace.routes)
        events = router.stream(question, found.vector, found.passages, route)
        # Pull the route decision now, so that a failure to plan is an error of the request.
        # It starts the backend too: the extractive one embeds its sentences here, in scope.
        choice = next(events)
    assert isinstance(choice, RouteChoice)  # noqa: S101 (Router.stream's contract)
    return _stream_events(events, choice, found, started, tenant_id, key_id, route, sessions)


def _stream_events(
    events: Iterator[RouteChoice | StreamEvent],
    choice: RouteChoice,
    found: Retrieved,
    started: float,
    tenant_id: str,
    key_id: str,
    route: Requested,
    sessions: Callable[[], Session],
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
                with sessions() as session:
                    _account(session, tenant_id, key_id, event, choice, route, timings)
                accounted = True
                yield StreamEnd(_result(event, choice, found, timings))
    finally:
        # A client that disconnects closes this generator: close the route's too, which frees
        # its endpoint (the outstanding count) and stops the model.
        close = getattr(events, "close", None)
        if close is not None:
            close()
        if not accounted:
            # The client left or the backend failed mid-answer: the request still counts.
            # Its tokens are unknown (backends report usage with the final answer).
            with sessions() as session:
                record_usage(
                    session,
                    tenant_id=tenant_id,
                    key_id=key_id,
                    prompt_tokens=0,
                    completion_tokens=0,
                )


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
    tenant_id: str,
    namespace_name: str,
    question: str,
    top_k: int | None,
    deps: QueryDeps,
    filter: Any,
    overrides: Mapping[str, Any] | None,
) -> tuple[Namespace, Retrieved]:
    namespace = get_namespace(session, tenant_id=tenant_id, name=namespace_name)
    expr = parse_query_filter(namespace, filter)
    # On SQLite every transaction holds the database's write lock (BEGIN IMMEDIATE): end this
    # one before the model and the vector store work, so that concurrent queries, uploads and
    # indexing wait only for each other's brief reads and writes, never for an embedding.
    session.commit()
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
    return namespace, found


def _account(
    session: Session,
    tenant_id: str,
    key_id: str,
    answer: Answer,
    choice: RouteChoice,
    requested: Requested,
    timings: Mapping[str, float],
) -> None:
    record_usage(
        session,
        tenant_id=tenant_id,
        key_id=key_id,
        prompt_tokens=answer.prompt_tokens,
        completion_tokens=answer.completion_tokens,
    )
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
        kept = [h for h in hits if str(h.payload["document_id"]) in visible]
        if len(kept) == len(hits):
            break
    return kept[:wanted]


def _ms_since(mark: float) -> float:
    return round((time.perf_counter() - mark) * 1000, 2)
