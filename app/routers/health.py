"""Liveness and readiness, without authentication (orchestrators call them)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.gateway.deps import PlatformDep
from retrieval.errors import StoreUnavailableError

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up and serving."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(platform: PlatformDep) -> JSONResponse:
    """Ready when the database, the vector store and the broker answer; 503 naming what failed."""
    checks: dict[str, Any] = {}
    try:
        with platform.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # any driver error means "not ready"; the detail says which
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        platform.store.ping()
        checks["vector_store"] = "ok"
    except StoreUnavailableError as exc:
        checks["vector_store"] = f"error: {exc}"
    depth = platform.queue.depth()
    if not platform.distributed:
        checks["broker"] = "ok (in-process)"
    else:
        checks["broker"] = "ok" if depth >= 0 else "error: broker unreachable"
    checks["queue_depth"] = depth
    required = (
        ("database", "vector_store", "broker")
        if platform.distributed
        else ("database", "vector_store")
    )
    ready = all(checks[name] == "ok" for name in required)
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
    )
