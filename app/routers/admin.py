"""``/v1/admin``: tenants (platform scope), their keys and usage (platform, or tenant admin)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from app.db.models import ApiKey
from app.errors import PermissionDeniedError
from app.gateway.deps import CallerDep, PlatformDep, SessionDep
from app.schemas.keys import KeyCreate, KeyCreated, KeyPublic, KeyUpdate
from app.schemas.tenants import TenantCreate, TenantPublic, TenantUpdate, UsagePublic
from app.services import keys, tenants, usage
from app.services.keys import Caller

router = APIRouter(prefix="/v1/admin", tags=["admin"])


def _require_platform(caller: Caller) -> None:
    if not caller.is_platform:
        raise PermissionDeniedError("managing tenants needs the platform scope")


@router.post("/tenants", status_code=201)
def create_tenant(body: TenantCreate, caller: CallerDep, session: SessionDep) -> TenantPublic:
    _require_platform(caller)
    tenant = tenants.create_tenant(
        session, name=body.name, quotas=body.quotas.model_dump(exclude_none=True)
    )
    return TenantPublic.model_validate(tenant, from_attributes=True)


@router.get("/tenants")
def list_tenants(caller: CallerDep, session: SessionDep) -> list[TenantPublic]:
    _require_platform(caller)
    return [
        TenantPublic.model_validate(t, from_attributes=True) for t in tenants.list_tenants(session)
    ]


@router.get("/tenants/{tenant_id}")
def get_tenant(tenant_id: str, caller: CallerDep, session: SessionDep) -> TenantPublic:
    keys.authorize_tenant_admin(caller, tenant_id)
    tenant = tenants.get_tenant(session, tenant_id=tenant_id)
    return TenantPublic.model_validate(tenant, from_attributes=True)


@router.patch("/tenants/{tenant_id}")
def update_tenant(
    tenant_id: str, body: TenantUpdate, caller: CallerDep, session: SessionDep
) -> TenantPublic:
    _require_platform(caller)
    tenant = tenants.update_quotas(
        session, tenant_id=tenant_id, quotas=body.quotas.model_dump(exclude_unset=True)
    )
    return TenantPublic.model_validate(tenant, from_attributes=True)


@router.delete("/tenants/{tenant_id}", status_code=204)
def delete_tenant(
    tenant_id: str, caller: CallerDep, session: SessionDep, platform: PlatformDep
) -> Response:
    _require_platform(caller)
    tenants.delete_tenant(session, tenant_id=tenant_id, store=platform.store)
    return Response(status_code=204)


@router.post("/tenants/{tenant_id}/keys", status_code=201)
def create_key(
    tenant_id: str, body: KeyCreate, caller: CallerDep, session: SessionDep
) -> KeyCreated:
    keys.authorize_tenant_admin(caller, tenant_id)
    tenants.get_tenant(session, tenant_id=tenant_id)
    row, plaintext = keys.create_key(
        session,
        tenant_id=tenant_id,
        name=body.name,
        scopes=body.scopes,
        quotas=body.quotas.model_dump(exclude_none=True),
        namespaces=body.namespaces,
    )
    session.commit()
    return KeyCreated.model_validate({**_key_fields(row), "key": plaintext})


@router.get("/tenants/{tenant_id}/keys")
def list_keys(tenant_id: str, caller: CallerDep, session: SessionDep) -> list[KeyPublic]:
    keys.authorize_tenant_admin(caller, tenant_id)
    tenants.get_tenant(session, tenant_id=tenant_id)
    return [
        KeyPublic.model_validate(_key_fields(k))
        for k in keys.list_keys(session, tenant_id=tenant_id)
    ]


@router.patch("/keys/{key_id}")
def update_key(key_id: str, body: KeyUpdate, caller: CallerDep, session: SessionDep) -> KeyPublic:
    row = keys.update_key_quotas(
        session,
        key_id=key_id,
        caller=caller,
        quotas=body.quotas.model_dump(exclude_unset=True),
    )
    session.commit()
    return KeyPublic.model_validate(_key_fields(row))


@router.delete("/keys/{key_id}", status_code=204)
def revoke_key(key_id: str, caller: CallerDep, session: SessionDep) -> Response:
    keys.revoke_key(session, key_id=key_id, caller=caller)
    session.commit()
    return Response(status_code=204)


@router.get("/tenants/{tenant_id}/usage")
def tenant_usage(
    tenant_id: str, caller: CallerDep, session: SessionDep, platform: PlatformDep
) -> list[UsagePublic]:
    keys.authorize_tenant_admin(caller, tenant_id)
    tenants.get_tenant(session, tenant_id=tenant_id)
    # This replica's last second too. End the request's transaction first: on SQLite it holds
    # the write lock that the flush's own transaction needs.
    session.commit()
    platform.usage.flush()
    rows = usage.usage_for_tenant(session, tenant_id=tenant_id)
    return [UsagePublic.model_validate(r, from_attributes=True) for r in rows]


def _key_fields(row: ApiKey) -> dict[str, object]:
    return {
        "id": row.id,
        "tenant_id": row.tenant_id,
        "name": row.name,
        "scopes": row.scopes,
        "quotas": row.quotas,
        "namespaces": row.namespaces,
        "created_at": row.created_at,
        "revoked_at": row.revoked_at,
    }
