"""FastAPI dependencies: the platform, a database session, and the authenticated caller."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

import structlog
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from app.errors import AuthenticationError
from app.platform import Platform
from app.services import keys
from app.services.keys import Caller

_bearer = HTTPBearer(auto_error=False, description="An API key: `shoal_<id>_<secret>`.")


def get_platform(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


PlatformDep = Annotated[Platform, Depends(get_platform)]


def get_session(platform: PlatformDep) -> Iterator[Session]:
    with platform.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_caller(
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """Authenticate the ``Authorization: Bearer <key>`` header on every request (no cache)."""
    if credentials is None:
        raise AuthenticationError("missing API key: send 'Authorization: Bearer <key>'")
    caller = keys.authenticate(session, credentials.credentials)
    structlog.contextvars.bind_contextvars(key_id=caller.key_id, tenant_id=caller.tenant_id)
    return caller


CallerDep = Annotated[Caller, Depends(get_caller)]
