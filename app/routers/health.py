"""Liveness and readiness, without authentication (orchestrators call them)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.gateway.deps import PlatformDep
from retrieval.cache import RedisCache
from retrieval.errors import CacheUnavailableError, StoreUnavailableError

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:  # async: no worker thread, even on a saturated replica
    """The process is up and serving."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={503: {"description": "Not ready: the same body, `checks` saying what failed."}},
)
def readyz(platform: PlatformDep) -> JSONResponse:
    """Ready once the embedding model has loaded and encoded, while the database answers; 503
    naming what is missing otherwise (``model``: ``loading`` for the first seconds after start).

    Until the model is warm every question would wait for it (~10 s on 2 cores); without the
    database no key can be checked at all. The vector store, the broker and the cache are
    checked and reported too, as ``degraded`` when down, without making the replica unready:
    each has a fallback (degraded or cached answers behind the store's breaker; uploads
    recorded and queued later by the reaper; embeddings computed), and every replica shares
    them, so taking replicas out of the load balancer for their outage would turn a degraded
    service into no service.
    """
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
        checks["vector_store"] = f"degraded: {exc}"
    # Fault drills wrap the cache; the Redis one underneath is what to ask.
    cache = getattr(platform.query.cache, "inner", platform.query.cache)
    if isinstance(cache, RedisCache):
        try:
            cache.ping()
            checks["cache"] = "ok"
        except CacheUnavailableError as exc:
            checks["cache"] = f"degraded: {exc}"
    else:
        checks["cache"] = "ok (in-process)"
    depth = platform.queue.depth()
    if not platform.distributed:
        checks["broker"] = "ok (in-process)"
    else:
        checks["broker"] = "ok" if depth >= 0 else "degraded: broker unreachable"
    checks["queue_depth"] = depth
    checks["model"] = platform.model_state()
    ready = checks["database"] == "ok" and checks["model"] == "ok"
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
    )
