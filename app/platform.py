"""The running platform: every adapter built once from settings, shared by app and CLI.

This and :mod:`app.main` are the only places that pick implementations; everything below
receives what it needs as arguments.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from celery import Celery
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import PENDING_STATES, Document
from app.db.session import make_engine, make_session_factory
from app.guards.faults import FaultRegistry
from app.guards.stack import guard
from app.metrics import (
    RATE_LIMIT_BACKEND,
    count_cache_lookups,
)
from app.services import indexing
from app.services.limiters import FailoverLimiter, LocalLimiter, RedisLimiter
from app.services.limits import RateLimits
from app.services.questions import QueryDeps
from app.services.reaper import Reaper
from app.services.scheduling import enqueue_fairly
from app.services.usage import UsageLedger
from app.settings import Settings
from ingestion.batching import BatchingEmbedder
from ingestion.embedder import ModelEmbedder, make_embedder
from retrieval.answers import AnswerCache, MemoryAnswerCache, RedisAnswerCache
from retrieval.cache import EmbeddingCache, MemoryCache, RedisCache
from retrieval.cached_embedder import CachedEmbedder
from retrieval.errors import CacheUnavailableError, StoreUnavailableError
from retrieval.generation.catalog import RouteCatalog
from retrieval.generation.evidence import DEFAULT_GATE, EvidenceGate
from retrieval.generation.extractive import ExtractiveGenerator
from retrieval.rerank import make_reranker
from retrieval.resilience import Breakers
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
    embedder: ModelEmbedder
    indexing: indexing.IndexingDeps
    query: QueryDeps
    queue: TaskQueue
    limits: RateLimits
    usage: UsageLedger
    celery: Celery | None = None  # distributed mode: the app `shoal worker` runs
    breakers: Breakers | None = None  # the vector store's and each LLM endpoint's
    faults: FaultRegistry | None = None  # fault drills (SHOAL_ENABLE_FAULTS)
    warm_up_error: str | None = None  # why the background warm-up failed (an exception's name)
    # The encoding threads in front of the model (indexing's, the questions'), closed last.
    encoders: tuple[BatchingEmbedder, ...] = ()

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
        """Load the embedding model and encode once, off the request path.

        Importing and loading it takes ~10 s on 2 cores; until it is done :meth:`model_state`
        is ``loading`` and ``/readyz`` says 503, so no balancer sends this replica a question
        that would wait for the model.
        """
        threading.Thread(target=self._warm_up, name="shoal-warm-up", daemon=True).start()

    def _warm_up(self) -> None:
        if self.embedder.warm:  # shared with a platform that warmed it (tests, benchmarks)
            return
        started = time.perf_counter()
        try:
            self.embedder.warm_up()
        except Exception as exc:  # any failure leaves the replica unready; /readyz names it
            self.warm_up_error = type(exc).__name__
            log.exception("embedding_model_warm_up_failed", model=self.embedder.model_id)
            return
        log.info(
            "embedding_model_ready",
            model=self.embedder.model_id,
            device=self.embedder.device,
            warm_up_ms=round((time.perf_counter() - started) * 1000),
        )

    def model_state(self) -> str:
        """The embedding model, as ``/readyz`` reports it: ``ok`` once it has encoded a text,
        ``loading`` before, ``error: <exception>`` if the warm-up failed (a later question
        tries loading it again, and ``ok`` follows if that works)."""
        if self.embedder.warm:
            return "ok"
        if self.warm_up_error is not None:
            return f"error: {self.warm_up_error}"
        return "loading"

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Whether this replica is ready (``/readyz``), and each dependency's check.

        Ready needs the database and a warm model; the vector store, cache and broker are
        reported ``degraded`` when down without making the replica unready (each has a
        fallback, and every replica shares them).
        """
        checks: dict[str, Any] = {}
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as exc:  # any driver error means "not ready"; the detail says which
            checks["database"] = f"error: {type(exc).__name__}"
        try:
            self.store.ping()
            checks["vector_store"] = "ok"
        except StoreUnavailableError as exc:
            checks["vector_store"] = f"degraded: {exc}"
        try:
            self.query.cache.ping()
            checks["cache"] = "ok" if self.settings.redis_url else "ok (in-process)"
        except CacheUnavailableError as exc:
            checks["cache"] = f"degraded: {exc}"
        depth = self.queue.depth()
        if not self.distributed:
            checks["broker"] = "ok (in-process)"
        else:
            checks["broker"] = "ok" if depth >= 0 else "degraded: broker unreachable"
        checks["queue_depth"] = depth
        checks["model"] = self.model_state()
        return checks["database"] == "ok" and checks["model"] == "ok", checks

    def close(self) -> None:
        self.usage.close()
        self.limits.close()
        self.queue.close(wait=True)
        for encoder in self.encoders:
            encoder.close()
        self.store.close()
        self.query.cache.close()  # shared with indexing
        if self.query.answers is not None:  # shared with indexing
            self.query.answers.close()
        if self.faults is not None:
            self.faults.close()
        self.engine.dispose()


def make_cache(settings: Settings) -> EmbeddingCache:
    """The embedding cache: Redis when ``SHOAL_REDIS_URL`` is set, else an in-process LRU.

    A platform builds one and shares it between queries and indexing; Redis also shares it
    between processes, so a worker reuses what an API replica or another worker embedded.
    """
    if settings.redis_url:
        return RedisCache(settings.redis_url, settings.cache)
    return MemoryCache(max_entries=settings.cache.max_entries)


def make_answer_cache(settings: Settings) -> AnswerCache:
    """The answer cache (served while the store is down): Redis when ``SHOAL_REDIS_URL`` is set,
    so workers that publish documents invalidate every replica's answers; else in-process."""
    if settings.redis_url:
        return RedisAnswerCache(settings.redis_url, settings.answers, settings.cache)
    return MemoryAnswerCache(settings.answers)


def make_limits(settings: Settings, *, rejections: UsageLedger | None = None) -> RateLimits:
    """Rate limits: shared through Redis when ``SHOAL_REDIS_URL`` is set, else in process;
    refused requests counted in ``rejections`` (the usage rows)."""
    config = settings.limits
    limiter: LocalLimiter | FailoverLimiter
    if settings.redis_url:
        limiter = FailoverLimiter(
            RedisLimiter(
                settings.redis_url, key_prefix=config.key_prefix, timeout_s=config.redis_timeout_s
            ),
            mode=config.redis_failure,
            replicas=config.replicas,
            cooldown_s=config.cooldown_s,
        )
    else:
        limiter = LocalLimiter()
        RATE_LIMIT_BACKEND.labels("local").set(1)
        RATE_LIMIT_BACKEND.labels("redis").set(0)
    return RateLimits(
        limiter,
        default_requests_per_minute=config.default_requests_per_minute,
        default_tokens_per_minute=config.default_tokens_per_minute,
        rejections=rejections,
    )


def build_platform(settings: Settings, *, embedder: ModelEmbedder | None = None) -> Platform:
    """Build every adapter for ``settings`` (the schema must already be migrated).

    ``embedder`` lets several platforms in one process (tests) share one loaded model.
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url)
    sessions = make_session_factory(engine)
    embedder = embedder or make_embedder(settings.embedding, cache_dir=settings.model_cache_dir)
    guarded = guard(
        settings,
        store=make_store(settings.vector_store, data_dir=settings.data_dir),
        model=embedder,
        cache=make_cache(settings),
        answers=make_answer_cache(settings),
    )
    store, model, cache = guarded.store, guarded.model, guarded.cache
    # Indexing threads share the model through one batching thread, behind the cache: only
    # the chunks it misses reach the model (a new version re-embeds only what changed).
    # Questions go through embed_query and the same cache (below).
    batching = BatchingEmbedder(model, max_batch=settings.embedding.pipeline_batch)
    indexing_deps = indexing.IndexingDeps(
        sessions=sessions,
        store=store,
        embedder=CachedEmbedder(batching, cache, on_lookup=count_cache_lookups("ingest")),
        chunking=settings.chunking,
        ingestion=settings.ingestion,
        max_attempts=settings.workers.max_attempts,
        answers=guarded.answers,
    )
    # Questions, and the sentences the gate and the extractive answer score, share one
    # encoding thread of their own: concurrent questions go through the model in one forward
    # pass (what piles up while the previous one runs), and never wait behind an indexing
    # batch. A cached question never reaches it (embed_query looks the cache up first).
    asking = BatchingEmbedder(model, max_batch=settings.embedding.pipeline_batch)
    # Quoted sentences go through the cache too: popular passages are quoted again and again,
    # and the evidence gate embeds the very sentences the extractive answer then quotes.
    sentences = CachedEmbedder(asking, cache, on_lookup=count_cache_lookups("answer"))
    # The gate decides whether to answer before any backend runs, so backends keep no floor.
    extractive = ExtractiveGenerator(
        sentences,
        max_sentences=settings.retrieval.max_answer_sentences,
        min_score=None,  # the evidence gate decides whether to answer
        quote_floor=DEFAULT_GATE.passage_floor,
    )
    usage = UsageLedger(sessions)
    limits = make_limits(settings, rejections=usage)
    query_deps = QueryDeps(
        store=store,
        embedder=asking,
        cache=cache,
        catalog=RouteCatalog(
            generators=settings.generators,
            default=settings.routes,
            extractive=extractive,
            min_score=None,
            wrap=guarded.backend,
        ),
        default_top_k=settings.retrieval.top_k,
        search=settings.retrieval.search_options(),
        gate=EvidenceGate(sentences),
        reranker=make_reranker(settings.retrieval.reranker),
        rerank_candidates=settings.retrieval.rerank_candidates,
        usage=usage,
        limits=limits,
        answers=guarded.answers,
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
        queue=guarded.queue(queue),
        limits=limits,
        usage=usage,
        celery=celery,
        breakers=guarded.breakers,
        faults=guarded.faults,
        encoders=(batching, asking),
    )
