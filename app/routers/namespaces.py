"""``/v1/namespaces``: a tenant's namespaces (admin; reads also write and query)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from app.errors import InvalidRequestError
from app.gateway.deps import CallerDep, PlatformDep, SessionDep
from app.platform import Platform
from app.schemas.namespaces import NamespaceCreate, NamespacePublic, NamespaceUpdate
from app.services import namespaces
from app.services.keys import (
    ADMIN,
    authorize_tenant_reader,
    authorize_tenant_scope,
)
from retrieval.config import RoutesConfig
from retrieval.generation.catalog import check_routes

router = APIRouter(prefix="/v1/namespaces", tags=["namespaces"])


@router.post("", status_code=201)
def create_namespace(
    body: NamespaceCreate, caller: CallerDep, session: SessionDep, platform: PlatformDep
) -> NamespacePublic:
    tenant_id = authorize_tenant_scope(caller, ADMIN).tenant_id
    model = platform.embedder.model_id
    if body.embedding_model not in (None, model):
        raise InvalidRequestError(
            f"this server embeds with {model!r}; other models are not loaded",
            field="embedding_model",
        )
    namespace = namespaces.create_namespace(
        session,
        tenant_id=tenant_id,
        name=body.name,
        embedding_model=model,
        embedding_dimension=platform.embedder.dimension,
        indexed_fields=dict(body.indexed_fields),
        routes=_stored_routes(body.routes, platform),
        search=body.search.model_dump(exclude_none=True),
        store=platform.store,
    )
    return NamespacePublic.model_validate(namespace, from_attributes=True)


@router.get("")
def list_namespaces(caller: CallerDep, session: SessionDep) -> list[NamespacePublic]:
    rows = namespaces.list_namespaces(session, access=authorize_tenant_reader(caller))
    return [NamespacePublic.model_validate(n, from_attributes=True) for n in rows]


@router.get("/{ns}")
async def get_namespace(ns: str, caller: CallerDep, session: SessionDep) -> NamespacePublic:
    # async, with the read in one pool thread: a `def` route takes a second hop to validate
    # its response. The session is committed there: no transaction outlives the thread.
    def read() -> NamespacePublic:
        namespace = namespaces.get_namespace(
            session, access=authorize_tenant_reader(caller), name=ns
        )
        session.commit()
        return NamespacePublic.model_validate(namespace, from_attributes=True)

    return await run_in_threadpool(read)


@router.patch("/{ns}")
def update_namespace(
    ns: str, body: NamespaceUpdate, caller: CallerDep, session: SessionDep, platform: PlatformDep
) -> NamespacePublic:
    namespace = namespaces.update_namespace(
        session,
        access=authorize_tenant_scope(caller, ADMIN),
        name=ns,
        indexed_fields=None if body.indexed_fields is None else dict(body.indexed_fields),
        routes=None if body.routes is None else _stored_routes(body.routes, platform),
        store=platform.store,
        search=None if body.search is None else body.search.model_dump(exclude_none=True),
    )
    return NamespacePublic.model_validate(namespace, from_attributes=True)


@router.delete("/{ns}", status_code=204)
def delete_namespace(
    ns: str, caller: CallerDep, session: SessionDep, platform: PlatformDep
) -> Response:
    access = authorize_tenant_scope(caller, ADMIN)
    namespaces.delete_namespace(session, access=access, name=ns, store=platform.store)
    return Response(status_code=204)


def _stored_routes(routes: RoutesConfig | None, platform: Platform) -> dict[str, Any]:
    """What the database keeps: only what differs from the defaults ({}: the server's).

    Raises:
        RoutesError: a route names no generator of the operator's catalog (a 422).
    """
    if routes is None:
        return {}
    check_routes(routes, platform.query.catalog.generators)
    return routes.model_dump(mode="json", exclude_defaults=True)
