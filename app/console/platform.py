"""Platform admin pages: tenants (list, create with quotas), and the system page: readiness,
circuit breakers and fault drills (``SHOAL_ENABLE_FAULTS``)."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Form, Request
from pydantic import TypeAdapter, ValidationError
from starlette.responses import Response

from app.console.web import (
    Console,
    ConsoleDep,
    ConsoleRoute,
    FormDep,
    error_status,
    form_error,
    is_htmx,
    render,
    see_other,
)
from app.errors import ConflictError, NotFoundError, PermissionDeniedError
from app.gateway.deps import PlatformDep, SessionDep
from app.guards.faults import TARGETS, FaultRegistry, FaultRegistryUnavailableError, new_fault
from app.platform import Platform
from app.schemas.faults import FaultCreate
from app.schemas.tenants import TenantCreate
from app.services import tenants

router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)

_FAULT = TypeAdapter[FaultCreate](FaultCreate)


def _require_platform(console: Console) -> None:
    if not console.is_platform:
        raise PermissionDeniedError("this page needs the platform scope")


@router.get("/tenants")
def tenant_list(request: Request, console: ConsoleDep, db: SessionDep) -> Response:
    _require_platform(console)
    return render(request, "tenants.html", tenants=tenants.list_tenants(db), form={})


@router.post("/tenants")
def tenant_create(
    request: Request,
    console: FormDep,
    db: SessionDep,
    name: Annotated[str, Form()] = "",
    requests_per_minute: Annotated[str, Form()] = "",
    tokens_per_minute: Annotated[str, Form()] = "",
) -> Response:
    """Create a tenant (``TenantCreate``'s rules), then open its page to give it a key."""
    _require_platform(console)
    given = {"requests_per_minute": requests_per_minute, "tokens_per_minute": tokens_per_minute}
    try:
        body = TenantCreate.model_validate(
            {"name": name, "quotas": {k: v.strip() for k, v in given.items() if v.strip()}}
        )
        tenant = tenants.create_tenant(
            db, name=body.name, quotas=body.quotas.model_dump(exclude_none=True)
        )
    except (ValidationError, ConflictError) as exc:
        status, error = (
            (422, form_error(exc)) if isinstance(exc, ValidationError) else error_status(exc)
        )
        return render(
            request,
            "tenants.html",
            status_code=status,
            tenants=tenants.list_tenants(db),
            form={"name": name, **given},
            error=error,
        )
    return see_other(f"/console/tenants/{tenant.id}")


@router.get("/system")
def system_page(request: Request, console: ConsoleDep, platform: PlatformDep) -> Response:
    """Readiness and breakers (reloaded every few seconds by htmx), and the fault drills."""
    _require_platform(console)
    return _system(request, platform)


@router.post("/system/faults")
def fault_inject(
    request: Request,
    console: FormDep,
    platform: PlatformDep,
    target: Annotated[str, Form()] = "",
    mode: Annotated[str, Form()] = "",
    delay_ms: Annotated[str, Form()] = "",
    ttl_s: Annotated[str, Form()] = "",
) -> Response:
    """Start a drill (``POST /v1/admin/faults``'s rules)."""
    _require_platform(console)
    registry = _registry(platform)
    try:
        body = _FAULT.validate_python(
            {
                "target": target,
                "mode": mode,
                **({"delay_ms": delay_ms.strip()} if delay_ms.strip() else {}),
                **({"ttl_s": ttl_s.strip()} if ttl_s.strip() else {}),
            }
        )
        registry.add(new_fault(body.target, body.mode, delay_ms=body.delay_ms, ttl_s=body.ttl_s))
    except ValidationError as exc:
        return _system(request, platform, error=form_error(exc), status_code=422)
    except FaultRegistryUnavailableError as exc:
        status, error = error_status(exc)
        return _system(request, platform, error=error, status_code=status)
    return see_other("/console/system")


@router.post("/system/faults/clear")
def faults_clear(console: FormDep, platform: PlatformDep) -> Response:
    _require_platform(console)
    _registry(platform).clear()
    return see_other("/console/system")


def _registry(platform: Platform) -> FaultRegistry:
    if platform.faults is None:
        raise NotFoundError("route", "/console/system/faults")
    return platform.faults


def _system(
    request: Request, platform: Platform, *, error: str | None = None, status_code: int = 200
) -> Response:
    ready, checks = platform.readiness()  # pings the store: its breaker sees each drill
    breakers = platform.breakers.states() if platform.breakers is not None else {}
    faults_error = None
    try:
        faults = platform.faults.active() if platform.faults is not None else []
    except FaultRegistryUnavailableError as exc:
        faults, faults_error = [], str(exc)
    return render(
        request,
        "_system_status.html" if is_htmx(request) else "system.html",
        status_code=status_code,
        ready=ready,
        checks=checks,
        breakers=breakers,
        drills=platform.faults is not None,
        faults=faults,
        faults_error=faults_error,
        targets=TARGETS,
        now=time.time(),
        error=error,
    )
