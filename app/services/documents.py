"""Documents: upload (deduplicated by content), list, read, delete."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db.models import Document, DocumentContent, DocumentState, Job, JobDocument, Namespace
from app.errors import NotFoundError
from ingestion.normalise import fingerprint
from ingestion.parsers import detect_media_type
from retrieval.stores.base import VectorStore


@dataclass(frozen=True)
class UploadItem:
    """One file of an upload, as the HTTP layer received it."""

    data: bytes
    filename: str | None = None
    declared_type: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    external_id: str | None = None


@dataclass(frozen=True)
class UploadedDocument:
    document: Document
    duplicate: bool


@dataclass(frozen=True)
class UploadResult:
    job: Job
    documents: list[UploadedDocument]


def upload(
    session: Session,
    *,
    namespace: Namespace,
    items: Sequence[UploadItem],
    enqueue: Callable[[str], None],
) -> UploadResult:
    """Record a batch of documents as one job, commit, then enqueue the new ones for indexing.

    Every item's type is checked before anything is written, so an unsupported file refuses
    the whole request and nothing is half-accepted. Content already in the namespace (same
    normalised-content hash) creates no document: the existing one is reported with
    ``duplicate=True``; if it had failed, it is queued again. The claim on a hash is the
    database's unique constraint, so two racing uploads of the same text yield one document.

    Raises:
        UnsupportedMediaError: an item's type is not one Shoal parses (nothing is written).
    """
    typed = [
        (item, detect_media_type(item.data, filename=item.filename, declared=item.declared_type))
        for item in items
    ]
    job = Job(tenant_id=namespace.tenant_id, namespace_id=namespace.id)
    session.add(job)
    try:
        session.flush()
    except IntegrityError as exc:  # the namespace was deleted since the caller looked it up
        session.rollback()
        raise NotFoundError("namespace", namespace.name) from exc
    results: list[UploadedDocument] = []
    to_enqueue: list[str] = []
    for position, (item, media_type) in enumerate(typed):
        content_hash = fingerprint(item.data, media_type)
        document, duplicate = _claim(session, namespace, item, media_type, content_hash)
        if duplicate and document.state == DocumentState.FAILED:
            document.state, document.reason = DocumentState.QUEUED, None
            to_enqueue.append(document.id)
        elif not duplicate:
            to_enqueue.append(document.id)
        already_in_job = any(r.document.id == document.id for r in results)
        if not already_in_job:
            session.add(
                JobDocument(
                    job_id=job.id, document_id=document.id, position=position, duplicate=duplicate
                )
            )
        results.append(UploadedDocument(document=document, duplicate=duplicate))
    session.commit()
    # Enqueue only after commit: a worker must find the rows it is handed.
    for document_id in dict.fromkeys(to_enqueue):
        enqueue(document_id)
    return UploadResult(job=job, documents=results)


def _claim(
    session: Session,
    namespace: Namespace,
    item: UploadItem,
    media_type: str,
    content_hash: str,
    *,
    retry: bool = True,
) -> tuple[Document, bool]:
    """Insert the document, or find the one that already holds this content."""
    document = Document(
        tenant_id=namespace.tenant_id,
        namespace_id=namespace.id,
        content_hash=content_hash,
        filename=item.filename,
        media_type=media_type,
        external_id=item.external_id,
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
                Document.namespace_id == namespace.id, Document.content_hash == content_hash
            )
        )
        if existing is not None:
            return existing, True
        if retry:  # the holder of this content was deleted between our insert and this read
            return _claim(session, namespace, item, media_type, content_hash, retry=False)
        # Not the content constraint: the namespace itself went away mid-upload.
        raise NotFoundError("namespace", namespace.name) from None
    return document, False


def list_documents(
    session: Session, *, namespace: Namespace, limit: int, offset: int
) -> tuple[list[Document], int]:
    """A page of the namespace's documents, oldest first, and the total count."""
    where = Document.namespace_id == namespace.id
    total = session.scalar(select(func.count()).select_from(Document).where(where)) or 0
    query = select(Document).where(where).order_by(Document.created_at, Document.id)
    return list(session.scalars(query.limit(limit).offset(offset))), total


def get_document(session: Session, *, namespace: Namespace, document_id: str) -> Document:
    """Raises: NotFoundError (also for a document of another namespace or tenant)."""
    document = session.get(Document, document_id)
    if document is None or document.namespace_id != namespace.id:
        raise NotFoundError("document", document_id)
    return document


def delete_document(
    session: Session, *, namespace: Namespace, document_id: str, store: VectorStore
) -> None:
    """Remove a document's points, then the document.

    Points go first: if the store fails, the document still exists and the delete can be
    retried; the reverse order could leave unreachable points that still answer queries.

    Raises:
        NotFoundError: no such document in this namespace.
        StoreUnavailableError: the points could not be removed (the document is kept).
    """
    document = get_document(session, namespace=namespace, document_id=document_id)
    store.delete(namespace.collection, where=document_where(document))
    session.delete(document)
    session.commit()


def document_where(document: Document) -> dict[str, str]:
    """The payload filter that selects exactly one document's points."""
    return {
        "tenant_id": document.tenant_id,
        "namespace_id": document.namespace_id,
        "document_id": document.id,
    }
