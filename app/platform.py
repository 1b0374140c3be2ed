"""The running platform: every adapter built once from settings, shared by app and CLI.

This and :mod:`app.main` are the only places that pick implementations; everything below
receives what it needs as arguments.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from celery import Celery
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import PENDING_STATES, Document
from app.db.session import make_engine, make_session_factory
from app.metrics import count_cache_lookups
from app.services import indexing
from app.services.query import QueryDeps, SearchOptions
from app.services.reaper import Reaper
from app.services.routing import RouterFactory
from app.services.scheduling import enqueue_fairly
from app.settings import Settings
from ingestion.batching import BatchingEmbedder
from ingestion.embedder import SentenceTransformerEmbedder
from retrieval.cache import CachedEmbedder, EmbeddingCache, MemoryCache, RedisCache
from retrieval.generation.extractive import DEFAULT_MIN_SCORE, ExtractiveGenerator
from retrieval.rerank import make_reranker
from retrieval.stores import make_store
from retrieval.stores.base import VectorStore
from workers.celery_app import CeleryConfig, CeleryQueue, create_celery
from workers.fairness import HIGHEST
from workers.inprocess import InProcessQueue
from workers.queue import TaskQueue

log = structlog.get_logger(__name__)


@dataclass
class Platform:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    store: VectorStore
    embedder: SentenceTransformerEmbedder
    indexing: indexing.IndexingDeps
    query: QueryDeps
    queue: TaskQueue
    celery: Celery | None = None  # distributed mode: the app `shoal worker` runs

    @property
    def distributed(self) -> bool:
        return self.celery is not None

    def enqueue(self, tenant_id: str, document_ids: Sequence[str]) -> None:
        """Queue a tenant's new documents behind its own backlog (:mod:`workers.fairness`)."""
        enqueue_fairly(self.sessions, self.queue, tenant_id, document_ids)

    def recover_pending(self) -> int:
        """Re-enqueue documents a previous process left pending, so none stays stuck.

        Embedded mode only: there the queue lived in the process that stopped. A broker keeps
        its messages, and the workers' reaper finds what it lost.
        """
        if self.distributed:
            return 0
        with self.sessions() as session:
            ids = list(
                session.scalars(select(Document.id).where(Document.state.in_(PENDING_STATES)))
            )
        for document_id in ids:  # the oldest work: ahead of anything enqueued from now on
            self.queue.enqueue(document_id, priority=HIGHEST)
        if ids:
            log.info("pending_documents_requeued", count=len(ids))
        return len(ids)

    def reaper(self) -> Reaper:
        """A reaper (not started) that requeues this platform's stuck documents."""
        workers = self.settings.workers
        return Reaper(
            self.sessions,
            older_than_s=workers.visibility_timeout_s,
            interval_s=workers.reaper_interval_s,
            enqueue=lambda document_id, priority: self.queue.enqueue(
                document_id, priority=priority
            ),
        )

    def warm_up_in_background(self) -> None:
        """Load the embedding model off the request path (importing it takes seconds)."""
        threading.Thread(target=self.embedder.warm_up, name="shoal-warm-up", daemon=True).start()

    def close(self) -> None:
        self.queue.close(wait=True)
        embedder = self.indexing.embedder
        if isinstance(embedder, CachedEmbedder) and isinstance(embedder.inner, BatchingEmbedder):
            embedder.inner.close()
        self.store.close()
        if isinstance(self.query.cache, RedisCache):
            self.query.cache.close()
        self.engine.dispose()


def make_cache(settings: Settings) -> EmbeddingCache:
    """The embedding cache: Redis when ``SHOAL_REDIS_URL`` is set, else an in-process LRU.

    A platform builds one and shares it between queries and indexing; Redis also shares it
    between processes, so a worker reuses what an API replica or another worker embedded.
    """
    if settings.redis_url:
        return RedisCache(settings.redis_url, settings.cache)
    return MemoryCache(max_entries=settings.cache.max_entries)


def build_platform(
    settings: Settings, *, embedder: SentenceTransformerEmbedder | None = None
) -> Platform:
    """Build every adapter for ``settings`` (the schema must already be migrated).

    ``embedder`` lets several platforms in one process (tests) share one loaded model.
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url)
    sessions = make_session_factory(engine)
    store = make_store(settings.vector_store, data_dir=settings.data_dir)
    embedder = embedder or SentenceTransformerEmbedder(settings.embedding)
    cache = make_cache(settings)
    # Indexing threads share the model through one batching thread, behind the cache: only
    # the chunks it misses reach the model (a new version re-embeds only what changed).
    # Queries use the model directly, through embed_query and the same cache.
    batching = BatchingEmbedder(embedder, max_batch=settings.embedding.pipeline_batch)
    indexing_deps = indexing.IndexingDeps(
        sessions=sessions,
        store=store,
        embedder=CachedEmbedder(batching, cache, on_lookup=count_cache_lookups("ingest")),
        chunking=settings.chunking,
        ingestion=settings.ingestion,
        max_attempts=settings.workers.max_attempts,
    )
    min_score = settings.retrieval.min_score
    min_score = DEFAULT_MIN_SCORE if min_score is None else min_score
    # Quoted sentences go through the cache too: popular passages are quoted again and again.
    sentences = CachedEmbedder(embedder, cache, on_lookup=count_cache_lookups("answer"))
    extractive = ExtractiveGenerator(
        sentences, max_sentences=settings.retrieval.max_answer_sentences, min_score=min_score
    )
    query_deps = QueryDeps(
        store=store,
        embedder=embedder,
        cache=cache,
        routers=RouterFactory(
            generators=settings.generators,
            default=settings.routes,
            extractive=extractive,
            min_score=min_score,
        ),
        default_top_k=settings.retrieval.top_k,
        search=SearchOptions(
            mode=settings.retrieval.mode,
            candidates=settings.retrieval.candidates,
            rrf_k=settings.retrieval.rrf_k,
            dense_weight=settings.retrieval.dense_weight,
            lexical_weight=settings.retrieval.lexical_weight,
            fusion=settings.retrieval.fusion,
        ),
        reranker=make_reranker(settings.retrieval.reranker),
        rerank_candidates=settings.retrieval.rerank_candidates,
    )
    handler = functools.partial(indexing.ingest_document, deps=indexing_deps)
    on_give_up = functools.partial(indexing.give_up, deps=indexing_deps)
    celery: Celery | None = None
    queue: TaskQueue
    if settings.broker_url:
        config = CeleryConfig(
            broker_url=settings.broker_url,
            queue=settings.workers.queue,
            max_attempts=settings.workers.max_attempts,
            visibility_timeout_s=settings.workers.visibility_timeout_s,
        )
        celery = create_celery(config, handler=handler, on_give_up=on_give_up)
        queue = CeleryQueue(celery, queue=config.queue)
    else:
        queue = InProcessQueue(
            handler,
            on_give_up=on_give_up,
            concurrency=settings.workers.concurrency,
            max_attempts=settings.workers.max_attempts,
        )
    return Platform(
        settings=settings,
        engine=engine,
        sessions=sessions,
        store=store,
        embedder=embedder,
        indexing=indexing_deps,
        query=query_deps,
        queue=queue,
        celery=celery,
    )
