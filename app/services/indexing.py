"""Indexing one document: parse → chunk → embed → upsert, recording each state on the row.

Called by the in-process runner and by the Celery task alike, with a document id. It is
idempotent: point ids derive from document id and chunk ordinal, so a redelivered task
overwrites the same points, and an already indexed document is left alone. Bad input marks the
document ``failed`` with a readable reason and is never retried; an unavailable store or
database raises :class:`workers.errors.TransientError` for the runner to retry.
"""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import Document, DocumentState, Namespace
from app.errors import EmbeddingModelMismatchError
from app.metrics import DOCUMENTS
from app.services import versions
from app.services.documents import document_where
from app.services.namespaces import check_embedding_model, collection_spec
from ingestion.chunking import chunk
from ingestion.config import ChunkingConfig, IngestionConfig
from ingestion.document import Chunk, ParsedDocument
from ingestion.embedder import ChunkEmbedder
from ingestion.errors import IngestionError
from ingestion.parsers import parse
from ingestion.prompt_tokens import count_prompt_tokens
from retrieval.answers import AnswerCache
from retrieval.answers import invalidate as invalidate_answers
from retrieval.cache import scoped
from retrieval.errors import EmbeddingUnavailableError, StoreUnavailableError
from retrieval.stores.base import Point, VectorStore
from workers.errors import TransientError

log = structlog.get_logger(__name__)

# Fixed namespace for point ids: uuid5(POINT_NAMESPACE, f"{document_id}:{ordinal}").
POINT_NAMESPACE = uuid.UUID("5f0a7d1e-3c55-4d8e-9a51-6b1f2f3c9e10")
UPSERT_BATCH = 256


@dataclass(frozen=True)
class IndexingDeps:
    sessions: sessionmaker[Session]
    store: VectorStore
    embedder: ChunkEmbedder
    chunking: ChunkingConfig
    ingestion: IngestionConfig
    max_attempts: int  # claims of one document before it fails (SHOAL_WORKERS__MAX_ATTEMPTS)
    # Told when a namespace's visible documents change, so its cached answers go stale.
    answers: AnswerCache | None = None


def point_id(document_id: str, ordinal: int) -> str:
    return str(uuid.uuid5(POINT_NAMESPACE, f"{document_id}:{ordinal}"))


def chunk_budget(config: ChunkingConfig, model_max_tokens: int) -> int:
    """The chunk size limit: the configured one, never above what the model can read."""
    return min(config.max_tokens or model_max_tokens, model_max_tokens)


def prepare_chunks(
    data: bytes, *, media_type: str, filename: str | None, deps: IndexingDeps
) -> tuple[ParsedDocument, list[Chunk]]:
    """Parse and chunk one document's bytes exactly as indexing does (pure; benchmarks too).

    Raises:
        IngestionError: the bytes are not a valid document of ``media_type``.
    """
    parsed = parse(data, media_type=media_type, filename=filename, config=deps.ingestion)
    budget = chunk_budget(deps.chunking, deps.embedder.max_seq_length)
    chunks = chunk(
        parsed,
        max_tokens=budget,
        overlap_tokens=min(deps.chunking.overlap_tokens, budget // 2),
        count_tokens=deps.embedder.count_tokens,
    )
    return parsed, list(chunks)


def ingest_document(document_id: str, *, deps: IndexingDeps) -> None:
    """Index one document (see the module docstring for the guarantees).

    Raises:
        TransientError: the store, the embedding model or the database is unavailable;
            retrying later may succeed.
    """
    try:
        _ingest(document_id, deps)
    except (StoreUnavailableError, EmbeddingUnavailableError, OperationalError) as exc:
        log.warning("indexing_transient_failure", document_id=document_id, error=str(exc))
        # If the database is the outage, the retry (or the reaper) finds the row as it is.
        with contextlib.suppress(OperationalError):
            _set_state(deps, document_id, DocumentState.QUEUED, reason=None)
        raise TransientError(str(exc)) from exc


def give_up(document_id: str, error: BaseException, *, deps: IndexingDeps) -> None:
    """Mark a document ``failed`` once its retries are spent, so nothing stays pending forever."""
    reason = (
        f"gave up after retries: {error}"
        if isinstance(error, TransientError)
        else "internal error while indexing; see the server log"
    )
    try:
        _set_state(deps, document_id, DocumentState.FAILED, reason=reason)
    except OperationalError:
        # The database itself is down: the start-up recovery re-enqueues the document later.
        log.error("give_up_not_recorded", document_id=document_id)


def _ingest(document_id: str, deps: IndexingDeps) -> None:
    with deps.sessions() as session:
        document = session.get(Document, document_id)
        if document is None or document.state == DocumentState.INDEXED:
            return  # deleted meanwhile, or a redelivery of finished work
        namespace = session.get(Namespace, document.namespace_id)
        if namespace is None:
            return
        if document.attempts >= deps.max_attempts:
            # Every earlier try ended without a verdict: a worker died on it (a document that
            # exhausts memory kills each worker it reaches) or it was retried out. Stop here.
            document.state = DocumentState.FAILED
            document.reason = (
                f"gave up after {document.attempts} attempts: indexing never finished "
                "(a worker stopped while indexing it)"
            )
            session.commit()
            DOCUMENTS.labels("failed").inc()
            return
        try:
            # A worker whose model differs from the namespace's (settings changed since it was
            # made, or workers of two settings) must not mix its vectors into it.
            check_embedding_model(namespace, deps.embedder.model_id)
        except EmbeddingModelMismatchError as exc:
            document.state, document.reason = DocumentState.FAILED, str(exc)
            session.commit()
            DOCUMENTS.labels("failed").inc()
            return
        document.state, document.reason = DocumentState.PARSING, None
        document.attempts += 1
        session.commit()
        data, media_type, filename = document.content.data, document.media_type, document.filename
        payload_base = _payload_base(document)
        collection, spec = namespace.collection, collection_spec(namespace)

    try:
        parsed, chunks = prepare_chunks(data, media_type=media_type, filename=filename, deps=deps)
    except (IngestionError, ValueError) as exc:
        _set_state(deps, document_id, DocumentState.FAILED, reason=str(exc))
        return
    if not chunks:
        _set_state(deps, document_id, DocumentState.FAILED, reason="document has no text")
        return

    _set_state(deps, document_id, DocumentState.EMBEDDING, reason=None)
    # The tenant's own cache entries: a new version re-embeds only the chunks that changed.
    vectors = scoped(deps.embedder, payload_base["tenant_id"]).encode(
        [c.text for c in chunks], token_counts=[c.token_count for c in chunks]
    )
    points = [
        Point(
            id=point_id(document_id, c.ordinal),
            vector=[float(x) for x in vector],
            payload=_chunk_payload(payload_base, parsed, c),
        )
        for c, vector in zip(chunks, vectors, strict=True)
    ]
    deps.store.ensure_collection(collection, spec)
    for start in range(0, len(points), UPSERT_BATCH):
        deps.store.upsert(collection, points[start : start + UPSERT_BATCH])

    # One transaction makes this version visible and retires the ones it replaces (or itself,
    # if a newer one won); their points go only after the commit (see app.services.versions).
    with deps.sessions() as session:
        document = session.get(Document, document_id)
        superseded = (
            None
            if document is None
            else versions.publish(session, document=document, chunk_count=len(chunks))
        )
        if superseded is None:
            # Deleted while we embedded: take back what we just wrote.
            deps.store.delete(collection, where=_where(payload_base, document_id))
            return
        session.commit()
    invalidate_answers(deps.answers, payload_base["namespace_id"])
    versions.remove_points(deps.store, collection, superseded)
    DOCUMENTS.labels("indexed").inc()
    log.info("document_indexed", document_id=document_id, chunks=len(chunks))


def _where(payload_base: dict[str, Any], document_id: str) -> dict[str, str]:
    return {
        "tenant_id": payload_base["tenant_id"],
        "namespace_id": payload_base["namespace_id"],
        "document_id": document_id,
    }


def _payload_base(document: Document) -> dict[str, Any]:
    return {
        **document_where(document),
        "filename": document.filename,
        "metadata": dict(document.meta),
    }


def _chunk_payload(base: dict[str, Any], parsed: ParsedDocument, c: Chunk) -> dict[str, Any]:
    return {
        **base,
        "ordinal": c.ordinal,
        "start": c.start,
        "end": c.end,
        "text": c.text,
        "section": c.section,
        "page": c.page,
        "llm_tokens": count_prompt_tokens(c.text),
        "title": parsed.title or base["filename"],
    }


def _set_state(
    deps: IndexingDeps, document_id: str, state: DocumentState, *, reason: str | None
) -> None:
    with deps.sessions() as session:
        document = session.get(Document, document_id)
        if document is None or document.state == DocumentState.INDEXED:
            # Indexed by another run of the same task (a redelivery overlapping a slow first
            # run): that verdict stands; this run's later steps must not take it back.
            return
        document.state, document.reason = state, reason
        session.commit()
    if state == DocumentState.FAILED:
        DOCUMENTS.labels("failed").inc()
