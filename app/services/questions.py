"""What the query service works with: a question as a caller asked it (:class:`Ask`), what
answering needs (:class:`QueryDeps`), and the events an answer comes as (:class:`StreamStart`,
:class:`~retrieval.generation.base.Delta` pieces, :class:`StreamEnd`)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from app.services.answers import QueryResult
from app.services.keys import TenantAccess
from app.services.limits import Quotas, RateLimits
from app.services.usage import UsageLedger
from retrieval.answers import AnswerCache
from retrieval.cache import EmbeddingCache
from retrieval.config import SearchOptions
from retrieval.embedding import ChunkEmbedder
from retrieval.generation.base import DEFAULT_OPTIONS, Delta, GenerationOptions
from retrieval.generation.catalog import RouteCatalog
from retrieval.generation.evidence import EvidenceGate
from retrieval.generation.routing import Requested
from retrieval.rerank import Reranker
from retrieval.search import Searcher
from retrieval.stores.base import VectorStore


@dataclass(frozen=True)
class QueryDeps:
    """The platform's parts a query uses (:attr:`app.platform.Platform.query`)."""

    store: VectorStore
    embedder: ChunkEmbedder  # knows its token limit, which questions are held to
    cache: EmbeddingCache
    default_top_k: int
    catalog: RouteCatalog
    search: SearchOptions = field(default_factory=SearchOptions)
    reranker: Reranker | None = None
    rerank_candidates: int = 30
    usage: UsageLedger | None = None  # None: usage is not recorded (evaluation runs)
    limits: RateLimits | None = None  # None: no token budgets
    answers: AnswerCache | None = None  # None: no cached answers while the store is down
    gate: EvidenceGate | None = None  # None: each backend decides alone whether to answer

    @functools.cached_property
    def searcher(self) -> Searcher:
        """What :func:`retrieval.search.search` reads with."""
        return Searcher(
            self.store,
            self.embedder,
            self.cache,
            self.search,
            self.reranker,
            self.rerank_candidates,
        )


@dataclass(frozen=True)
class Ask:
    """One question as a caller put it (the keyword arguments of
    :func:`app.services.query.answer_question`)."""

    access: TenantAccess
    key_id: str
    namespace_name: str
    question: str
    top_k: int | None
    filter: Any = None  # Any: the request's raw JSON filter
    overrides: Mapping[str, Any] | None = None
    route: Requested = "auto"
    quotas: Quotas | None = None
    options: GenerationOptions = DEFAULT_OPTIONS


@dataclass(frozen=True)
class StreamStart:
    """The first event of an answer: the route chosen, before any text."""

    route_name: str
    route_reason: str
    retry_after_s: int | None = None  # set when the answer is degraded


@dataclass(frozen=True)
class StreamEnd:
    """The last event of an answer: the whole answer and what it cost."""

    result: QueryResult


Event = StreamStart | Delta | StreamEnd
