"""A tenant's page: its quotas and keys (create with scopes and quotas, the secret shown once;
revoke); its usage is :mod:`app.console.usage`'s page. Platform admins reach every tenant's, a
tenant admin only its own (another's is 404, as in the API)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from fastapi import APIRouter, Form, Request
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.responses import Response

from app.console.web import (
    Console,
    ConsoleDep,
    ConsoleRoute,
    FormDep,
    error_status,
    form_error,
    render,
    see_other,
)
from app.errors import InvalidRequestError, PermissionDeniedError
from app.gateway.deps import SessionDep
from app.schemas.keys import KeyCreate
from app.schemas.tenants import TenantUpdate
from app.services import keys, tenants

router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)

SCOPES = ("admin", "write", "query")
QUOTA_NAMES = ("requests_per_minute", "tokens_per_minute")


@router.get("/keys")
def own_keys(console: ConsoleDep) -> Response:
    """A tenant admin's own tenant page (platform keys belong to no tenant)."""
    if console.caller.tenant_id is None:
        return see_other("/console/tenants")
    return see_other(f"/console/tenants/{console.caller.tenant_id}")


@router.get("/tenants/{tenant_id}")
def tenant_page(request: Request, tenant_id: str, console: ConsoleDep, db: SessionDep) -> Response:
    return _page(request, db, console, tenant_id)


@router.post("/tenants/{tenant_id}/keys")
def key_create(
    request: Request,
    tenant_id: str,
    console: FormDep,
    db: SessionDep,
    name: Annotated[str, Form()] = "",
    scopes: Annotated[list[str] | None, Form()] = None,
    requests_per_minute: Annotated[str, Form()] = "",
    tokens_per_minute: Annotated[str, Form()] = "",
    namespaces: Annotated[str, Form()] = "",
) -> Response:
    """Create a key (``KeyCreate``'s rules); the answer shows its secret, this once.

    ``namespaces``: a comma-separated list limits a write or query key to those namespaces;
    empty, the key reaches all of the tenant's."""
    keys.authorize_tenant_admin(console.caller, tenant_id)
    tenants.get_tenant(db, tenant_id=tenant_id)
    form = {
        "name": name,
        "scopes": scopes or [],
        "requests_per_minute": requests_per_minute,
        "tokens_per_minute": tokens_per_minute,
        "namespaces": namespaces,
    }
    limited = [name.strip() for name in namespaces.split(",") if name.strip()]
    try:
        body = KeyCreate.model_validate(
            {
                "name": name.strip(),
                "scopes": scopes or [],
                "quotas": _quotas(requests_per_minute, tokens_per_minute),
                "namespaces": limited or None,
            }
        )
        row, secret = keys.create_key(
            db,
            tenant_id=tenant_id,
            name=body.name,
            scopes=body.scopes,
            quotas=body.quotas.model_dump(exclude_none=True),
            namespaces=body.namespaces,
        )
        db.commit()
    except (ValidationError, InvalidRequestError) as exc:
        db.rollback()
        status, error = (
            (422, form_error(exc)) if isinstance(exc, ValidationError) else error_status(exc)
        )
        return _page(request, db, console, tenant_id, form=form, error=error, status_code=status)
    return _page(request, db, console, tenant_id, created=(row.name, secret))


@router.post("/tenants/{tenant_id}/quotas")
def tenant_quotas(
    request: Request,
    tenant_id: str,
    console: FormDep,
    db: SessionDep,
    requests_per_minute: Annotated[str, Form()] = "",
    tokens_per_minute: Annotated[str, Form()] = "",
) -> Response:
    """Set a tenant's quotas (``PATCH /v1/admin/tenants/{id}``'s rules, platform only); an
    empty field removes that quota (the server's default applies), as ``null`` there."""
    if not console.is_platform:
        raise PermissionDeniedError("changing a tenant's quotas needs the platform scope")
    given = {"requests_per_minute": requests_per_minute, "tokens_per_minute": tokens_per_minute}
    try:
        body = TenantUpdate.model_validate(
            {"quotas": {name: value.strip() or None for name, value in given.items()}}
        )
    except ValidationError as exc:
        return _page(
            request,
            db,
            console,
            tenant_id,
            quota_form=given,
            error=form_error(exc),
            status_code=422,
        )
    tenants.update_quotas(db, tenant_id=tenant_id, quotas=body.quotas.model_dump())
    return see_other(f"/console/tenants/{tenant_id}?saved=quotas")


@router.post("/keys/{key_id}/revoke")
def key_revoke(key_id: str, console: FormDep, db: SessionDep) -> Response:
    """Revoke a key (``DELETE /v1/admin/keys/{key_id}``'s rules): its next request fails."""
    row = keys.revoke_key(db, key_id=key_id, caller=console.caller)
    tenant_id = row.tenant_id
    db.commit()
    # A platform key has no tenant page (only platform callers can revoke one).
    return see_other("/console/tenants" if tenant_id is None else f"/console/tenants/{tenant_id}")


def _quotas(requests_per_minute: str, tokens_per_minute: str) -> dict[str, str]:
    given = {"requests_per_minute": requests_per_minute, "tokens_per_minute": tokens_per_minute}
    return {name: value.strip() for name, value in given.items() if value.strip()}


def _page(
    request: Request,
    db: Session,
    console: Console,
    tenant_id: str,
    *,
    form: Mapping[str, object] | None = None,
    quota_form: Mapping[str, str] | None = None,
    created: tuple[str, str] | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    keys.authorize_tenant_admin(console.caller, tenant_id)
    tenant = tenants.get_tenant(db, tenant_id=tenant_id)
    saved = request.query_params.get("saved") == "quotas"
    return render(
        request,
        "tenant.html",
        status_code=status_code,
        tenant=tenant,
        keys=keys.list_keys(db, tenant_id=tenant_id),
        scopes=SCOPES,
        form=form or {"scopes": ["query"]},
        created=created,
        quota_form=quota_form or {name: str(tenant.quotas.get(name, "")) for name in QUOTA_NAMES},
        notice="Quotas saved: they apply from the next request." if saved else None,
        error=error,
    )
