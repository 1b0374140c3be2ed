"""``/v1/admin/faults``: fault drills (platform scope). Mounted only with
``SHOAL_ENABLE_FAULTS=true``; otherwise these paths are unknown routes (404)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Body, Response

from app.errors import NotFoundError, PermissionDeniedError
from app.gateway.deps import CallerDep, PlatformDep
from app.guards.faults import Fault, FaultRegistry, new_fault
from app.platform import Platform
from app.schemas.faults import FaultCreate, FaultPublic
from app.services.keys import Caller

router = APIRouter(prefix="/v1/admin/faults", tags=["admin"])


def _registry(caller: Caller, platform: Platform) -> FaultRegistry:
    if not caller.is_platform:
        raise PermissionDeniedError("fault drills need the platform scope")
    if platform.faults is None:  # a platform built with other settings than the app's
        raise NotFoundError("route", "/v1/admin/faults")
    return platform.faults


@router.post("", status_code=201)
def inject_fault(
    body: Annotated[FaultCreate, Body(discriminator="mode")],
    caller: CallerDep,
    platform: PlatformDep,
) -> FaultPublic:
    """Make every call to ``target`` fail (``error``) or wait ``delay_ms`` (``delay``)."""
    fault = new_fault(body.target, body.mode, delay_ms=body.delay_ms, ttl_s=body.ttl_s)
    _registry(caller, platform).add(fault)
    return _public(fault)


@router.get("")
def list_faults(caller: CallerDep, platform: PlatformDep) -> list[FaultPublic]:
    return [_public(f) for f in _registry(caller, platform).active()]


@router.delete("", status_code=204)
def clear_faults(caller: CallerDep, platform: PlatformDep) -> Response:
    _registry(caller, platform).clear()
    return Response(status_code=204)


def _public(fault: Fault) -> FaultPublic:
    expires = (
        None if fault.expires_at is None else dt.datetime.fromtimestamp(fault.expires_at, dt.UTC)
    )
    return FaultPublic(
        target=fault.target, mode=fault.mode, delay_ms=fault.delay_ms, expires_at=expires
    )
