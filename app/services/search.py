"""The app's part of a search: which namespace the caller means, the filter checked against
its indexed fields, and which documents queries may see. :func:`retrieval.search.search` does
the rest (options, the question's vector, the store, over-fetching, the rerank)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from sqlalchemy.orm import Session

from app.db.models import Namespace
from app.errors import InvalidRequestError
from app.services.keys import TenantAccess
from app.services.namespaces import get_namespace
from app.services.versions import visible_documents
from retrieval.filters import Expr, FilterError, parse_filter
from retrieval.search import Query, Retrieved, Searcher, Visibility, search

# Payload key under which documents' metadata lives, and so the prefix of filter fields.
METADATA_PREFIX = "metadata."


def resolve(
    session: Session, access: TenantAccess, namespace_name: str, filter: Any, *, model_id: str
) -> tuple[Namespace, Expr | None]:
    """The namespace ``access`` asks for by name, and the query's filter checked against it.

    Ends the session's transaction: on SQLite every transaction holds the database's write lock
    (BEGIN IMMEDIATE), so the lookup must not hold it while the model and the store work, and
    concurrent queries, uploads and indexing wait only for each other's brief reads and writes.

    Raises:
        NotFoundError: no such namespace for this tenant, or one ``access`` may not use.
        EmbeddingModelMismatchError: the namespace was indexed by another model than
            ``model_id`` (its vectors do not share a space with the question's).
        InvalidRequestError: the filter does not fit the namespace's indexed fields.
    """
    namespace = get_namespace(session, access=access, name=namespace_name, embedded_by=model_id)
    expr = parse_query_filter(namespace, filter)
    session.commit()
    return namespace, expr


def parse_query_filter(namespace: Namespace, raw: Any) -> Expr | None:
    """The query's JSON filter checked against the namespace's indexed fields.

    Raises:
        InvalidRequestError: the filter is invalid; ``field`` says where (a 422).
    """
    if raw is None:
        return None
    try:
        return parse_filter(raw, namespace.indexed_fields, key_prefix=METADATA_PREFIX)
    except FilterError as exc:
        raise InvalidRequestError(str(exc), field=exc.field) from exc


def visible_in(session: Session) -> Visibility:
    """Which of some documents queries may cite, asked of ``session``'s database: published
    versions only (:func:`app.services.versions.visible_documents`)."""

    def visible(document_ids: set[str]) -> Collection[str]:
        shown = visible_documents(session, document_ids)
        # End the read's transaction before the next search: on SQLite it holds the write lock,
        # and a stalled store would hold every writer for as long as the search waits.
        session.commit()
        return shown

    return visible


def retrieve(
    session: Session,
    searcher: Searcher,
    namespace: Namespace,
    *,
    question: str,
    top_k: int,
    filter: Expr | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Retrieved:
    """The ``top_k`` best visible passages of ``namespace`` for ``question``, best first
    (:func:`retrieval.search.search`, with the namespace's search settings and the tenant's
    cache entries).

    Raises:
        QuestionTooLongError: the question has more tokens than the embedding model reads.
        StoreUnavailableError: the vector store failed, timed out, or its breaker is open.
        EmbeddingUnavailableError: the embedding model failed.
    """
    query = Query(
        question=question,
        top_k=top_k,
        tenant_id=namespace.tenant_id,
        namespace_id=namespace.id,
        collection=namespace.collection,
        filter=filter,
        stored=namespace.search,
        overrides=overrides or {},
    )
    return search(searcher, query, visible_in(session))
