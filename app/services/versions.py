"""Document versions: which documents a query may cite, decided by the database alone.

Documents that share an ``external_id`` in a namespace are versions of one another, numbered
from 1 in upload order (:func:`app.services.documents.upload`). Exactly one is current: the
highest version that is indexed. A version's points are written to the vector store before it
becomes visible, and removed only after it stops being visible, so the store always holds the
points of every visible document, and may hold more:

1. Indexing upserts the new version's points while the old one is still the only one visible.
2. :func:`publish` marks the new version ``indexed`` and deletes the rows of the versions it
   replaces, in one transaction: readers see the old version or the new one, never both or
   neither.
3. After the commit, :func:`remove_points` deletes the replaced versions' points. If the store
   fails, those points stay behind, invisible.

Queries keep only the hits of :func:`visible_documents`, which hides points of documents that
are not indexed yet, were replaced, or were deleted while their point removal failed.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import Document, DocumentState
from app.services.documents import document_where
from retrieval.errors import StoreError
from retrieval.stores.base import VectorStore

log = structlog.get_logger(__name__)

# Replaced versions whose rows go: a pending one is left to finish, and then finds itself
# replaced (deleting it under its worker would race the worker's own updates).
_SETTLED = (DocumentState.INDEXED, DocumentState.FAILED)


def publish(session: Session, *, document: Document, chunk_count: int) -> list[Document] | None:
    """Mark ``document`` indexed and retire the versions it replaces, in the session's transaction.

    Every version of ``document.external_id`` below the newest indexed one that is indexed or
    failed is deleted here; that includes ``document`` itself when a higher version is already
    indexed. The caller commits, then removes the returned documents' points
    (:func:`remove_points`).

    On Postgres the versions' rows are locked in version order first, so two versions finishing
    at once take turns and the later sees the earlier's outcome; SQLite writers are serial.

    Returns:
        The documents deleted here (``document`` among them if it was superseded), or ``None``
        when ``document`` itself has been deleted meanwhile (nothing is changed).
    """
    document_id = document.id
    if document.external_id is not None:
        versions = list(
            session.scalars(
                select(Document)
                .where(
                    Document.namespace_id == document.namespace_id,
                    Document.external_id == document.external_id,
                )
                .order_by(Document.version)
                .with_for_update()
                .execution_options(populate_existing=True)
            )
        )
        if all(v.id != document_id for v in versions):
            return None
    else:
        versions = [document]
    document.state, document.reason = DocumentState.INDEXED, None
    document.chunk_count = chunk_count
    current = max(v.version for v in versions if v.state == DocumentState.INDEXED)
    superseded = [v for v in versions if v.version < current and v.state in _SETTLED]
    for old in superseded:
        session.delete(old)
    return superseded


def remove_points(store: VectorStore, collection: str, documents: Sequence[Document]) -> None:
    """Delete replaced versions' points; a store failure leaves them orphaned but invisible."""
    for document in documents:
        try:
            store.delete(collection, where=document_where(document))
        except StoreError as exc:
            log.warning("superseded_points_left", document_id=document.id, error=str(exc))
        else:
            log.info("version_superseded", document_id=document.id, version=document.version)


def visible_documents(session: Session, document_ids: Collection[str]) -> set[str]:
    """Those of ``document_ids`` whose points a query may cite: rows that exist and are indexed.

    Replaced versions have no row (:func:`publish`), so the newest indexed version is the only
    one of its ``external_id`` here.
    """
    if not document_ids:
        return set()
    return set(
        session.scalars(
            select(Document.id).where(
                Document.id.in_(document_ids), Document.state == DocumentState.INDEXED
            )
        )
    )
