"""The running platform: every adapter built once from settings, shared by app and CLI.

This and :mod:`app.main` are the only places that pick implementations; everything below
receives what it needs as arguments.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

import structlog
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import PENDING_STATES, Document
from app.db.session import make_engine, make_session_factory
from app.services import indexing
from app.services.query import QueryDeps
from app.settings import Settings
from ingestion.embedder import SentenceTransformerEmbedder
from retrieval.cache import MemoryCache
from retrieval.generation.extractive import DEFAULT_MIN_SCORE, ExtractiveGenerator
from retrieval.stores import make_store
from retrieval.stores.base import VectorStore
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

    def enqueue(self, document_id: str) -> None:
        self.queue.enqueue(document_id)

    def recover_pending(self) -> int:
        """Re-enqueue documents a previous process left pending, so none stays stuck."""
        with self.sessions() as session:
            ids = list(
                session.scalars(select(Document.id).where(Document.state.in_(PENDING_STATES)))
            )
        for document_id in ids:
            self.queue.enqueue(document_id)
        if ids:
            log.info("pending_documents_requeued", count=len(ids))
        return len(ids)

    def warm_up_in_background(self) -> None:
        """Load the embedding model off the request path (importing it takes seconds)."""
        threading.Thread(target=self.embedder.warm_up, name="shoal-warm-up", daemon=True).start()

    def close(self) -> None:
        self.queue.close(wait=True)
        self.store.close()
        self.engine.dispose()


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
    indexing_deps = indexing.IndexingDeps(
        sessions=sessions, store=store, embedder=embedder, chunking=settings.chunking
    )
    min_score = settings.retrieval.min_score
    query_deps = QueryDeps(
        store=store,
        embedder=embedder,
        cache=MemoryCache(max_entries=settings.retrieval.embedding_cache_entries),
        generator=ExtractiveGenerator(
            embedder,
            max_sentences=settings.retrieval.max_answer_sentences,
            min_score=DEFAULT_MIN_SCORE if min_score is None else min_score,
        ),
        default_top_k=settings.retrieval.top_k,
    )
    queue = InProcessQueue(
        functools.partial(indexing.ingest_document, deps=indexing_deps),
        on_give_up=functools.partial(indexing.give_up, deps=indexing_deps),
        concurrency=settings.workers.concurrency,
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
    )
