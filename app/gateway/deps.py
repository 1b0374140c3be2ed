"""FastAPI dependencies: the platform, a database session, and the authenticated caller."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import structlog
from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session
from starlette.datastructures import State

from app.errors import AuthenticationError, RateLimitedError
from app.platform import Platform
from app.services import keys
from app.services.keys import Caller
from app.services.limits import Quotas

_bearer = HTTPBearer(auto_error=False, description="An API key: `shoal_<id>_<secret>`.")
_api_key_header = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="The same key, for clients that cannot send `Authorization`.",
)


async def get_platform(request: Request) -> Platform:  # async: no worker thread for this
    platform: Platform = request.app.state.platform
    return platform


PlatformDep = Annotated[Platform, Depends(get_platform)]


async def get_session(platform: PlatformDep) -> AsyncIterator[Session]:
    """The request's session; closed (any open transaction rolled back) when it ends.

    An ``async`` dependency on purpose: its exit runs on the event loop, not in the thread
    pool. On SQLite every transaction holds the write lock; a request that left one open and
    then had to wait for a free thread only to close it would keep the lock while every pool
    thread waits for that lock (a deadlock that lasts the busy timeout). Creating a session
    touches no database, so nothing here blocks the loop.
    """
    with platform.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_caller(
    request: Request,
    session: SessionDep,
    platform: PlatformDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key_header)],
) -> Caller:
    """Authenticate the key (``Authorization: Bearer <key>`` or ``X-API-Key: <key>``) on every
    request (no cache), then count the request against its key's and tenant's budgets.

    Raises:
        AuthenticationError: no key, or a bad one (401).
        RateLimitedError: a requests-per-minute budget is spent (429).
        LimiterUnavailableError: the shared limiter is down and limits fail closed (503).
    """
    token = credentials.credentials if credentials is not None else api_key
    if not token:
        raise AuthenticationError(
            "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
        )
    caller = keys.authenticate(session, token)
    # End the lookup's transaction now: on SQLite it holds the write lock, and the handler
    # runs in another pool thread, which may not be free while other requests wait for it.
    session.commit()
    structlog.contextvars.bind_contextvars(key_id=caller.key_id, tenant_id=caller.tenant_id)
    request.state.key_id, request.state.tenant_id = caller.key_id, caller.tenant_id  # access log
    admit(platform, caller, request.state)
    return caller


def admit(platform: Platform, caller: Caller, state: State) -> None:
    """Count one request (an HTTP request, an MCP tool call) against the caller's key's and
    tenant's request budgets; the budget's state goes into ``state`` for the ``RateLimit-*``
    headers (:class:`app.gateway.limit_headers.RateLimitHeadersMiddleware`). Blocking (Redis).

    Raises:
        RateLimitedError: a requests-per-minute budget is spent (429).
        LimiterUnavailableError: the shared limiter is down and limits fail closed (503).
    """
    quotas = caller_quotas(platform, caller)
    if quotas is None:
        return
    try:
        decision = platform.limits.admit(quotas)
    except RateLimitedError as exc:
        state.rate_limit = exc.decision
        raise
    if decision is not None:
        state.rate_limit = decision


def caller_quotas(platform: Platform, caller: Caller) -> Quotas | None:
    """The budgets of a tenant key (platform keys have none)."""
    if caller.tenant_id is None:
        return None
    return platform.limits.quotas(
        tenant_id=caller.tenant_id,
        key_id=caller.key_id,
        tenant=caller.tenant_quotas,
        key=caller.key_quotas,
    )


CallerDep = Annotated[Caller, Depends(get_caller)]
