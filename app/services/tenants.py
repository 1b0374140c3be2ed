"""Tenants: create, list, read, change quotas, delete (cascading to everything they own)."""

from __future__ import annotations

from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db.models import Namespace, Tenant
from app.errors import ConflictError, NotFoundError
from retrieval.errors import StoreError
from retrieval.stores.base import VectorStore

log = structlog.get_logger(__name__)


def create_tenant(session: Session, *, name: str, quotas: dict[str, Any]) -> Tenant:
    """Create and commit a tenant.

    Raises:
        ConflictError: a tenant with this name exists.
    """
    tenant = Tenant(name=name, quotas=quotas)
    session.add(tenant)
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        raise ConflictError(f"a tenant named {name!r} already exists") from exc
    return tenant


def list_tenants(session: Session) -> list[Tenant]:
    return list(session.scalars(select(Tenant).order_by(Tenant.created_at, Tenant.id)))


def get_tenant(session: Session, *, tenant_id: str) -> Tenant:
    """Raises: NotFoundError."""
    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFoundError("tenant", tenant_id)
    return tenant


def update_quotas(session: Session, *, tenant_id: str, quotas: dict[str, Any]) -> Tenant:
    """Replace the quota entries given (None removes one; others kept) and commit.

    Raises: NotFoundError.
    """
    tenant = get_tenant(session, tenant_id=tenant_id)
    merged = {**tenant.quotas, **quotas}
    tenant.quotas = {name: value for name, value in merged.items() if value is not None}
    session.commit()
    return tenant


def delete_tenant(session: Session, *, tenant_id: str, store: VectorStore) -> None:
    """Delete a tenant, its keys, namespaces, documents, jobs and usage, and drop its collections.

    Rows go first (one transaction), so a failure to drop a collection leaves an orphan
    collection nobody can reach, never a tenant whose data half exists.

    Raises:
        NotFoundError: no such tenant.
    """
    tenant = get_tenant(session, tenant_id=tenant_id)
    collections = [
        ns.collection
        for ns in session.scalars(select(Namespace).where(Namespace.tenant_id == tenant_id))
    ]
    session.delete(tenant)
    session.commit()
    for name in collections:
        try:
            store.drop_collection(name)
        except StoreError:
            log.warning("collection_drop_failed", collection=name, tenant_id=tenant_id)
