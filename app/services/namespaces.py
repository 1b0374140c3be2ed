"""Namespaces: a tenant's named document collections, one vector collection each."""

from __future__ import annotations

import re
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db.models import Namespace
from app.errors import (
    ConflictError,
    EmbeddingModelMismatchError,
    InvalidRequestError,
    NotFoundError,
)
from app.services.keys import TenantAccess
from retrieval.errors import StoreError
from retrieval.stores.base import CollectionSpec, VectorStore

log = structlog.get_logger(__name__)

FIELD_TYPES = frozenset({"keyword", "integer", "float", "bool", "datetime"})
# An indexed field becomes the vector store's JSON path ``metadata.<name>``: a space or a quote
# is refused by Qdrant (the store fails, a 503), and `.` or `[]` would silently index a nested
# key instead of the metadata key of that name.
FIELD_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def check_field_names(indexed_fields: dict[str, str]) -> None:
    """Refuse field names the vector store cannot index as metadata keys.

    Raises:
        InvalidRequestError: a name outside letters, digits, `_` and `-`, or over 64 characters.
    """
    for name in indexed_fields:
        if not FIELD_NAME.fullmatch(name):
            raise InvalidRequestError(
                f"indexed field names take 1-64 letters, digits, '_' or '-'; got {name!r}",
                field="indexed_fields",
            )


def collection_spec(namespace: Namespace) -> CollectionSpec:
    """The vector collection shape a namespace needs."""
    return CollectionSpec(
        dimension=namespace.embedding_dimension,
        indexed_fields={f"metadata.{k}": v for k, v in namespace.indexed_fields.items()},
    )


def create_namespace(
    session: Session,
    *,
    tenant_id: str,
    name: str,
    embedding_model: str,
    embedding_dimension: int,
    indexed_fields: dict[str, str],
    routes: dict[str, Any],
    store: VectorStore,
    search: dict[str, Any] | None = None,
) -> Namespace:
    """Create a namespace and its collection, and commit.

    The row is committed first and the collection created after; if the store fails the row is
    removed again, so a namespace never exists without a place for its vectors.

    Raises:
        InvalidRequestError: an indexed field name the store cannot index.
        ConflictError: the tenant already has a namespace of this name.
        StoreUnavailableError: the vector store could not create the collection.
        StoreRequestError: the vector store refused to create it.
    """
    check_field_names(indexed_fields)
    namespace = Namespace(
        tenant_id=tenant_id,
        name=name,
        embedding_model=embedding_model,
        embedding_dimension=embedding_dimension,
        indexed_fields=indexed_fields,
        routes=routes,
        search=search or {},
    )
    session.add(namespace)
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        raise ConflictError(f"a namespace named {name!r} already exists") from exc
    try:
        store.ensure_collection(namespace.collection, collection_spec(namespace))
    except StoreError:
        session.delete(namespace)
        session.commit()
        raise
    return namespace


def list_namespaces(session: Session, *, access: TenantAccess) -> list[Namespace]:
    """The tenant's namespaces that ``access`` may use, by name."""
    query = select(Namespace).where(Namespace.tenant_id == access.tenant_id)
    if access.namespaces is not None:
        query = query.where(Namespace.name.in_(sorted(access.namespaces)))
    return list(session.scalars(query.order_by(Namespace.name)))


def get_namespace(
    session: Session, *, access: TenantAccess, name: str, embedded_by: str | None = None
) -> Namespace:
    """The tenant's namespace called ``name``, if ``access`` may use it; with ``embedded_by``
    (the model id of the embedder about to write or search its vectors), only if its vectors
    are that model's (:func:`check_embedding_model`): every door that embeds asks here.

    Raises:
        NotFoundError: none in this tenant (another tenant's namespace of that name included),
            or one the key is not limited to: the same error, so a limited key cannot tell.
        EmbeddingModelMismatchError: the namespace was indexed by another model than
            ``embedded_by``.
    """
    if not access.allows(name):
        raise NotFoundError("namespace", name)
    query = select(Namespace).where(Namespace.tenant_id == access.tenant_id, Namespace.name == name)
    namespace = session.scalar(query)
    if namespace is None:
        raise NotFoundError("namespace", name)
    if embedded_by is not None:
        check_embedding_model(namespace, embedded_by)
    return namespace


def check_embedding_model(namespace: Namespace, model_id: str) -> None:
    """Refuse to put ``model_id``'s vectors beside ``namespace``'s, or to compare them.

    A namespace records the embedder that indexed it (its ``model_id``: the model, plus the
    runtime where that changes the vectors, as ``+onnx-int8`` does); uploads and questions
    embedded by another are refused, never silently compared.

    Raises:
        EmbeddingModelMismatchError: ``model_id`` is not the namespace's.
    """
    if namespace.embedding_model != model_id:
        raise EmbeddingModelMismatchError(
            namespace.name, indexed_with=namespace.embedding_model, server=model_id
        )


def update_namespace(
    session: Session,
    *,
    access: TenantAccess,
    name: str,
    indexed_fields: dict[str, str] | None,
    routes: dict[str, Any] | None,
    store: VectorStore,
    search: dict[str, Any] | None = None,
) -> Namespace:
    """Change routes and search settings, add indexed fields, and commit.

    Indexed fields can be added, not retyped or removed: points already written carry the
    old payload, and a type change would silently stop matching them.

    Raises:
        NotFoundError: no such namespace for this tenant.
        InvalidRequestError: an existing field's type changed or a field was removed, or a new
            field's name cannot be indexed.
    """
    namespace = get_namespace(session, access=access, name=name)
    if indexed_fields is not None:
        # Only new names: one indexed before this rule keeps working.
        check_field_names(
            {k: v for k, v in indexed_fields.items() if k not in namespace.indexed_fields}
        )
        for field, kind in namespace.indexed_fields.items():
            if indexed_fields.get(field) != kind:
                raise InvalidRequestError(
                    f"indexed field {field!r} ({kind}) cannot be removed or retyped",
                    field=f"indexed_fields.{field}",
                )
        namespace.indexed_fields = dict(indexed_fields)
    if routes is not None:
        namespace.routes = dict(routes)
    if search is not None:
        namespace.search = dict(search)
    session.commit()
    store.ensure_collection(namespace.collection, collection_spec(namespace))
    return namespace


def delete_namespace(
    session: Session, *, access: TenantAccess, name: str, store: VectorStore
) -> None:
    """Delete a namespace with its documents and jobs, and drop its collection.

    Raises:
        NotFoundError: no such namespace for this tenant.
    """
    namespace = get_namespace(session, access=access, name=name)
    collection = namespace.collection
    session.delete(namespace)
    session.commit()
    try:
        store.drop_collection(collection)
    except StoreError:
        log.warning("collection_drop_failed", collection=collection, namespace=name)
