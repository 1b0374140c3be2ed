"""Answering a question in a namespace: embed (cached) → search (tenant-filtered, visible
documents only) → answer."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from app.db.models import Namespace
from app.metrics import EMBEDDING_CACHE, STAGE_SECONDS
from app.services.namespaces import get_namespace
from app.services.usage import record_usage
from app.services.versions import visible_documents
from retrieval.cache import EmbeddingCache, embed_query
from retrieval.embedding import Embedder
from retrieval.generation.base import Answer, GenerationBackend, Passage
from retrieval.search import MAX_LIMIT, search
from retrieval.stores.base import Hit, SearchRequest, VectorStore

# Searches of one question while hits keep being dropped (see _search_visible).
_SEARCH_ATTEMPTS = 3


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
    generator: GenerationBackend
    default_top_k: int


def answer_question(
    session: Session,
    *,
    tenant_id: str,
    key_id: str,
    namespace_name: str,
    question: str,
    top_k: int | None,
    deps: QueryDeps,
) -> QueryResult:
    """Answer ``question`` from the tenant's namespace, with citations, or abstain.

    Raises:
        NotFoundError: no such namespace for this tenant.
        StoreUnavailableError: the vector store failed.
    """
    started = time.perf_counter()
    namespace = get_namespace(session, tenant_id=tenant_id, name=namespace_name)
    timings: dict[str, float] = {}

    mark = time.perf_counter()
    vector, cache_hit = embed_query(deps.embedder, deps.cache, question)
    timings["embed"] = _ms_since(mark)

    mark = time.perf_counter()
    hits = _search_visible(
        session,
        deps.store,
        namespace,
        vector,
        tenant_id=tenant_id,
        top_k=top_k or deps.default_top_k,
    )
    timings["search"] = _ms_since(mark)

    passages = [
        Passage(
            chunk_id=hit.id,
            document_id=str(hit.payload["document_id"]),
            text=str(hit.payload.get("text", "")),
            score=hit.score,
            payload=hit.payload,
        )
        for hit in hits
    ]
    mark = time.perf_counter()
    answer = deps.generator.generate(question, vector, passages)
    timings["generate"] = _ms_since(mark)

    record_usage(
        session,
        tenant_id=tenant_id,
        key_id=key_id,
        prompt_tokens=answer.prompt_tokens,
        completion_tokens=answer.completion_tokens,
    )
    timings["total"] = _ms_since(started)
    EMBEDDING_CACHE.labels("hit" if cache_hit else "miss").inc()
    for stage in ("embed", "search", "generate"):
        STAGE_SECONDS.labels(stage).observe(timings[stage] / 1000)
    return QueryResult(
        answer=answer,
        route_name="extractive",
        # TODO(issue 6): small/large routing picks an LLM backend by measurable features.
        route_reason="extractive answer: no generation backend is configured",
        passages=passages,
        timings_ms=timings,
        cache_hit=cache_hit,
    )


def _search_visible(
    session: Session,
    store: VectorStore,
    namespace: Namespace,
    vector: Sequence[float],
    *,
    tenant_id: str,
    top_k: int,
) -> list[Hit]:
    """The ``top_k`` best hits whose documents the database says are visible.

    The store may hold points no query should cite: a version not yet published, a replaced
    version or a deleted document whose point removal is pending or failed
    (:mod:`app.services.versions`). Over-fetching keeps those from starving the answer.

    A version swap that commits between the search and the visibility check would leave
    neither version: the old one's hits are dropped, and the search ran before the new one's
    points were written. So while the check drops hits, search again (bounded; orphaned points
    cost their namespace's queries the extra searches until removed).
    """
    limit = min(top_k * 2 + 4, MAX_LIMIT)
    kept: list[Hit] = []
    for _ in range(_SEARCH_ATTEMPTS):
        hits = search(
            store,
            namespace.collection,
            SearchRequest(vector, limit=limit),
            tenant_id=tenant_id,
            namespace_id=namespace.id,
        )
        visible = visible_documents(session, {str(h.payload["document_id"]) for h in hits})
        kept = [h for h in hits if str(h.payload["document_id"]) in visible]
        if len(kept) == len(hits):
            break
    return kept[:top_k]


def _ms_since(mark: float) -> float:
    return round((time.perf_counter() - mark) * 1000, 2)
