"""Documents: upload (deduplicated by content), list, read, delete."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db.models import Document, DocumentContent, DocumentState, Job, JobDocument, Namespace
from app.errors import ConflictError, NotFoundError
from app.services import idempotency as idempotency_keys
from app.services.idempotency import IdempotencyClaim
from app.services.uploads import UploadItem, checked_metadata, typed_items
from ingestion.config import DEFAULT_INGESTION, IngestionConfig
from ingestion.normalise import fingerprint
from retrieval.answers import AnswerCache
from retrieval.answers import invalidate as invalidate_answers
from retrieval.stores.base import VectorStore

log = structlog.get_logger(__name__)

# Inserts of one document before giving up: each retry follows a racing upload's commit.
_CLAIM_ATTEMPTS = 10


@dataclass(frozen=True)
class UploadedDocument:
    document: Document
    duplicate: bool


@dataclass(frozen=True)
class UploadResult:
    """The job, the documents this call recorded, and ``response``: the API's answer as JSON.

    A replay (an idempotency key seen before) records nothing: ``documents`` is empty and
    ``response`` is the first answer, as stored with the key.
    """

    job: Job
    documents: list[UploadedDocument]
    response: dict[str, Any]
    replayed: bool = False


def upload(
    session: Session,
    *,
    namespace: Namespace,
    items: Sequence[UploadItem],
    enqueue: Callable[[str, Sequence[str]], None],
    ingestion: IngestionConfig = DEFAULT_INGESTION,
    records: bool = False,
    idempotency: IdempotencyClaim | None = None,
) -> UploadResult:
    """Record a batch of documents as one job, commit, then enqueue the new ones for indexing.

    ``enqueue(tenant_id, document_ids)`` is called once, after the commit, in upload order.

    Every item's type is checked before anything is written, so an unsupported file refuses
    the whole request and nothing is half-accepted. A JSONL file, and a JSON file that holds
    records, becomes one document per record (:func:`app.services.uploads.typed_items`); with
    ``records``, every JSON file does, one per element of a top-level array. Content already in
    the namespace (same normalised-content hash) creates no document: the existing one is
    reported with ``duplicate=True``; if it had failed, it is queued again. The claim on a hash
    is the database's unique constraint, so two racing uploads of the same text yield one
    document.

    New content under an ``external_id`` already in the namespace is its next version
    (:func:`_claim`); indexing makes it replace the older one (:mod:`app.services.versions`).

    With ``idempotency``, a key the tenant used before (within 24 hours) for the same request
    records nothing and returns the first answer (``replayed=True``); the key is claimed in the
    job's transaction, so concurrent requests with one key make one job
    (:mod:`app.services.idempotency`).

    Raises:
        UnsupportedMediaError: an item's type is not one Shoal parses (nothing is written).
        ParseError: a JSON or JSONL file cannot be split into records; the message names the
            file and, for JSONL, the line (nothing is written).
        DocumentTooLargeError: a file holds more than ``ingestion.max_records`` records.
        IdempotencyKeyReusedError: the key was used for another request (nothing is written).
        ConflictError: too many concurrent uploads under one ``external_id`` (rare; retry).
    """
    typed = checked_metadata(
        typed_items(items, ingestion, records=records), namespace.indexed_fields
    )
    tenant_id, namespace_name = namespace.tenant_id, namespace.name
    if idempotency is not None:
        replay = _replay(session, tenant_id, idempotency)
        if replay is not None:
            return replay
    job = Job(tenant_id=namespace.tenant_id, namespace_id=namespace.id)
    session.add(job)
    try:
        session.flush()
    except IntegrityError as exc:  # the namespace was deleted since the caller looked it up
        session.rollback()
        raise NotFoundError("namespace", namespace.name) from exc
    key = None
    if idempotency is not None:
        try:
            key = idempotency_keys.record(
                session, tenant_id=tenant_id, claim=idempotency, job_id=job.id
            )
        except IntegrityError as exc:
            # A concurrent request with this key committed first: drop our job, answer as it.
            session.rollback()
            replay = _replay(session, tenant_id, idempotency)
            if replay is not None:
                return replay
            # Its job is gone already: only deleting the namespace does that.
            raise NotFoundError("namespace", namespace_name) from exc
    results: list[UploadedDocument] = []
    to_enqueue: list[str] = []
    in_job: set[str] = set()  # the same content twice in one batch is one job entry
    for position, (item, media_type) in enumerate(typed):
        content_hash = fingerprint(item.data, media_type)
        document, duplicate = _claim(session, namespace, item, media_type, content_hash)
        if duplicate and document.state == DocumentState.FAILED:
            document.state, document.reason = DocumentState.QUEUED, None
            document.attempts = 0  # a fresh start: its earlier tries count no more
            to_enqueue.append(document.id)
        elif not duplicate:
            to_enqueue.append(document.id)
        if document.id not in in_job:
            in_job.add(document.id)
            session.add(
                JobDocument(
                    job_id=job.id, document_id=document.id, position=position, duplicate=duplicate
                )
            )
        results.append(UploadedDocument(document=document, duplicate=duplicate))
    job.document_count = len(in_job)
    response = _response(job, results)
    if key is not None:
        key.response = response
    session.commit()
    # Enqueue only after commit: a worker must find the rows it is handed.
    if to_enqueue:
        try:
            enqueue(namespace.tenant_id, list(dict.fromkeys(to_enqueue)))
        except Exception:
            # The rows are committed and the answer is a 202 either way: the reaper queues
            # documents left `queued` without a message (a broker outage must not make the
            # client retry an upload that was recorded).
            log.exception("enqueue_failed", job_id=job.id, documents=len(to_enqueue))
    return UploadResult(job=job, documents=results, response=response)


def _response(job: Job, results: Sequence[UploadedDocument]) -> dict[str, Any]:
    """The ``202`` body (``UploadAccepted``): also what an idempotency key replays."""
    return {
        "job_id": job.id,
        "documents": [
            {
                "id": r.document.id,
                "state": r.document.state.value,
                "duplicate": r.duplicate,
                "filename": r.document.filename,
                "version": r.document.version,
            }
            for r in results
        ],
    }


def _replay(session: Session, tenant_id: str, claim: IdempotencyClaim) -> UploadResult | None:
    """The first answer under ``claim``'s key, or ``None`` when the key is new or expired."""
    stored = idempotency_keys.find_stored(session, tenant_id=tenant_id, claim=claim)
    if stored is None:
        return None
    job = session.get(Job, stored.job_id)
    if job is None:  # deleted with its namespace since the key was read
        return None
    return UploadResult(job=job, documents=[], response=stored.response, replayed=True)


def _claim(
    session: Session,
    namespace: Namespace,
    item: UploadItem,
    media_type: str,
    content_hash: str,
) -> tuple[Document, bool]:
    """Insert the document, or find the one that already holds this content.

    Under an ``external_id`` the new document is the next version: one more than the highest
    version of that id in the namespace. The unique constraints arbitrate races: a concurrent
    upload of the same content makes ours a duplicate; one of other content under the same
    external id takes our version number, and we count again.
    """
    namespace_id, tenant_id, name = namespace.id, namespace.tenant_id, namespace.name
    for _ in range(_CLAIM_ATTEMPTS):
        document = Document(
            tenant_id=tenant_id,
            namespace_id=namespace_id,
            content_hash=content_hash,
            filename=item.filename,
            media_type=media_type,
            external_id=item.external_id,
            version=_next_version(session, namespace_id, item.external_id),
            meta=item.metadata,
            size_bytes=len(item.data),
            state=DocumentState.QUEUED,
            content=DocumentContent(data=item.data),
        )
        try:
            with session.begin_nested():
                session.add(document)
        except IntegrityError:
            existing = session.scalar(
                select(Document).where(
                    Document.namespace_id == namespace_id, Document.content_hash == content_hash
                )
            )
            if existing is not None:
                return existing, True
            if session.scalar(select(Namespace.id).where(Namespace.id == namespace_id)) is None:
                # Not a constraint to retry past: the namespace went away mid-upload.
                raise NotFoundError("namespace", name) from None
            # Our version number was taken, or the holder of this content was deleted between
            # our insert and that read: count and insert again.
            continue
        return document, False
    raise ConflictError(
        f"{_CLAIM_ATTEMPTS} concurrent uploads under external_id {item.external_id!r} took "
        "each version number first; send the request again"
    )


def _next_version(session: Session, namespace_id: str, external_id: str | None) -> int:
    if external_id is None:
        return 1
    highest = session.scalar(
        select(func.max(Document.version)).where(
            Document.namespace_id == namespace_id, Document.external_id == external_id
        )
    )
    return (highest or 0) + 1


def list_documents(
    session: Session,
    *,
    namespace: Namespace,
    limit: int,
    offset: int,
    state: DocumentState | None = None,
    external_id: str | None = None,
) -> tuple[list[Document], int]:
    """A page of the namespace's documents (only those in ``state``, and only the versions of
    ``external_id``, if given), oldest first, and how many there are."""
    where = [Document.namespace_id == namespace.id]
    if state is not None:
        where.append(Document.state == state)
    if external_id is not None:
        where.append(Document.external_id == external_id)
    total = session.scalar(select(func.count()).select_from(Document).where(*where)) or 0
    query = select(Document).where(*where).order_by(Document.created_at, Document.id)
    return list(session.scalars(query.limit(limit).offset(offset))), total


def get_document(session: Session, *, namespace: Namespace, document_id: str) -> Document:
    """Raises: NotFoundError (also for a document of another namespace or tenant)."""
    document = session.get(Document, document_id)
    if document is None or document.namespace_id != namespace.id:
        raise NotFoundError("document", document_id)
    return document


def delete_document(
    session: Session,
    *,
    namespace: Namespace,
    document_id: str,
    store: VectorStore,
    answers: AnswerCache | None = None,
) -> None:
    """Remove a document's points, then the document, then its points once more.

    Points go first: if the store fails, the document still exists and the delete can be
    retried. The second sweep is for a worker indexing the document at that moment: points it
    wrote between the first sweep and the row's deletion are taken now, and a worker that
    writes after the row is gone finds no row to publish to and removes its own points.
    Once the row is gone, the namespace's cached ``answers`` are invalidated.

    Raises:
        NotFoundError: no such document in this namespace.
        StoreUnavailableError: the points could not be removed (the document is kept).
    """
    document = get_document(session, namespace=namespace, document_id=document_id)
    where = document_where(document)
    store.delete(namespace.collection, where=where)
    session.delete(document)
    session.commit()
    invalidate_answers(answers, namespace.id)
    store.delete(namespace.collection, where=where)


def document_where(document: Document) -> dict[str, str]:
    """The payload filter that selects exactly one document's points."""
    return {
        "tenant_id": document.tenant_id,
        "namespace_id": document.namespace_id,
        "document_id": document.id,
    }
