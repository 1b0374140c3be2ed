"""Liveness and readiness, without authentication (orchestrators call them)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.gateway.deps import PlatformDep

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
    ready, checks = platform.readiness()
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
    )
