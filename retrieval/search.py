"""Search within one tenant's namespace, end to end: the options, the question's vector (through
the tenant's cache entries), the store's search restricted to the tenant and namespace, the
documents the caller may see, and the rerank.

:func:`search` is the one entry; the app resolves the tenant, the namespace and the filter, and
hands it a :data:`Visibility` callable (which documents the database says are published).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from retrieval.cache import EmbeddingCache, embed_query, normalise_query
from retrieval.config import SearchOptions
from retrieval.embedding import ChunkEmbedder
from retrieval.errors import QuestionTooLongError
from retrieval.filters import Expr
from retrieval.generation.base import Passage
from retrieval.rerank import Reranker
from retrieval.stores.base import Hit, SearchRequest, VectorStore

MAX_LIMIT = 300
# Searches of one question while hits keep being dropped (see _visible_hits).
SEARCH_ATTEMPTS = 3

# Given document ids, the ones a query may cite (published, not deleted). Called once per
# search attempt; whatever transaction it needs, it ends before returning.
Visibility = Callable[[set[str]], Collection[str]]


@dataclass(frozen=True)
class Searcher:
    """What a search reads with: the store, the question's model and cache, the server's search
    options (which a namespace's and a request's overlay) and the reranker."""

    store: VectorStore
    embedder: ChunkEmbedder  # knows its token limit, which questions are held to
    cache: EmbeddingCache
    options: SearchOptions = field(default_factory=SearchOptions)
    reranker: Reranker | None = None
    rerank_candidates: int = 30


@dataclass(frozen=True)
class Query:
    """One question to one namespace of one tenant.

    ``stored`` is the namespace's own search settings, ``overrides`` the request's; each
    non-None entry replaces the server's option of the same name, the request's last.
    """

    question: str
    top_k: int
    tenant_id: str
    namespace_id: str
    collection: str
    filter: Expr | None = None
    stored: Mapping[str, Any] = field(default_factory=dict)
    overrides: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Retrieved:
    """What the search found for a question, and what it took."""

    passages: list[Passage]
    vector: list[float]
    cache_hit: bool
    options: SearchOptions
    timings_ms: dict[str, float]


def search(searcher: Searcher, query: Query, visible: Visibility) -> Retrieved:
    """The ``query.top_k`` best visible passages for ``query``, best first.

    Each passage's ``score`` is its cosine with the question (whatever ranked it), which is
    what abstention and citations compare.

    Raises:
        QuestionTooLongError: the question has more tokens than the embedding model reads.
        StoreUnavailableError: the vector store failed, timed out, or its breaker is open (then
            at once, before the question is embedded).
        EmbeddingUnavailableError: the embedding model failed.
    """
    check_question_length(searcher.embedder, query.question)
    searcher.store.check_open()
    options = searcher.options.overlay(query.stored).overlay(query.overrides)
    timings: dict[str, float] = {}
    mark = time.perf_counter()
    vector, cache_hit = embed_query(
        searcher.embedder, searcher.cache, query.question, scope=query.tenant_id
    )
    timings["embed"] = _ms_since(mark)

    reranking = options.rerank and searcher.reranker is not None
    wanted = max(query.top_k, searcher.rerank_candidates) if reranking else query.top_k
    request = SearchRequest(
        vector,
        limit=wanted,
        filter=query.filter,
        text=query.question if options.mode != "dense" else None,
        mode=options.mode,
        candidates=max(options.candidates, wanted),
        rrf_k=options.rrf_k,
        dense_weight=options.dense_weight,
        lexical_weight=options.lexical_weight,
        fusion=options.fusion,
    )
    mark = time.perf_counter()
    hits = _visible_hits(searcher.store, query, request, visible)
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
    if reranking and searcher.reranker is not None:
        mark = time.perf_counter()
        passages = searcher.reranker.rerank(query.question, passages, query.top_k)
        timings["rerank"] = _ms_since(mark)
    return Retrieved(passages[: query.top_k], vector, cache_hit, options, timings)


def search_points(
    store: VectorStore,
    collection: str,
    request: SearchRequest,
    *,
    tenant_id: str,
    namespace_id: str,
) -> list[Hit]:
    """The best ``request.limit`` chunks of a namespace for ``request``, best first, visible or
    not.

    Always adds ``tenant_id`` and ``namespace_id`` to the request's conditions, although the
    collection already belongs to one namespace: defence in depth, so a reused or mistyped
    collection name can never return another tenant's chunks.

    Raises:
        ValueError: ``request.limit`` is outside 1..MAX_LIMIT.
        StoreUnavailableError: the vector store failed.
    """
    if not 1 <= request.limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}, got {request.limit}")
    where = {**request.where, "tenant_id": tenant_id, "namespace_id": namespace_id}
    return store.search(collection, dataclasses.replace(request, where=where))


def check_question_length(embedder: ChunkEmbedder, question: str) -> None:
    """Refuse a question the model would truncate (a 422 naming it, not a 500).

    Raises:
        QuestionTooLongError: it has more tokens than ``embedder`` reads.
    """
    text = normalise_query(question)
    # A word piece covers at least one character: shorter texts cannot exceed the limit
    # (two special tokens included), and most questions are, so most skip the tokenizer.
    if len(text) + 2 <= embedder.max_seq_length:
        return
    tokens = embedder.count_tokens(text)
    if tokens > embedder.max_seq_length:
        raise QuestionTooLongError(
            f"the question has {tokens} tokens; {embedder.model_id} reads at most "
            f"{embedder.max_seq_length}",
            field="question",
        )


def _visible_hits(
    store: VectorStore, query: Query, request: SearchRequest, visible: Visibility
) -> list[Hit]:
    """The ``request.limit`` best hits whose documents ``visible`` keeps.

    The store may hold points no query should cite: a version not yet published, a replaced
    version or a deleted document whose point removal is pending or failed. Over-fetching keeps
    those from starving the answer.

    A version swap that commits between the search and the visibility check would leave
    neither version: the old one's hits are dropped, and the search ran before the new one's
    points were written. So while the check drops hits, search again (bounded; orphaned points
    cost their namespace's queries the extra searches until removed).
    """
    wanted = request.limit
    request = dataclasses.replace(request, limit=min(wanted * 2 + 4, MAX_LIMIT))
    kept: list[Hit] = []
    for _ in range(SEARCH_ATTEMPTS):
        hits = search_points(
            store,
            query.collection,
            request,
            tenant_id=query.tenant_id,
            namespace_id=query.namespace_id,
        )
        shown = visible({str(h.payload["document_id"]) for h in hits})
        kept = [h for h in hits if str(h.payload["document_id"]) in shown]
        if len(kept) == len(hits):
            break
    return kept[:wanted]


def _ms_since(mark: float) -> float:
    return round((time.perf_counter() - mark) * 1000, 2)
