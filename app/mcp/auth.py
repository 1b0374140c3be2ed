"""Who calls the MCP door: a Shoal API key as the Bearer token, checked by the SDK's token
verifier against the same key store as every other door, on every HTTP request (no cache), so
a revoked key is refused on its next call."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any

import anyio.to_thread
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.context import CallNext, HandlerResult, ServerMiddleware, ServerRequestContext
from pydantic import ConfigDict
from starlette.datastructures import Headers
from starlette.requests import Request

from app.errors import AuthenticationError
from app.platform import Platform
from app.services import keys
from app.services.keys import Caller


class CallerToken(AccessToken):
    """The SDK's access token, carrying the caller the key stands for (its tenant, scopes,
    namespaces and quotas, as the HTTP door's authentication reads them)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    caller: Caller


# The request's key, verified before the SDK's app runs (:meth:`KeyVerifier.verify_request`),
# for the SDK's bearer middleware to take up: set and read within one request's task.
_VERIFIED: ContextVar[tuple[str, CallerToken | None] | None] = ContextVar(
    "shoal_mcp_verified", default=None
)


class KeyVerifier:
    """The SDK's ``TokenVerifier`` on Shoal's keys. ``platform`` gives the running platform
    (built in the app's lifespan, after this).

    The key is read from the database in :meth:`verify_request`, before the SDK's app runs,
    so that a database outage raises where the app's problem handlers answer it (a 503 with
    ``Retry-After``, as on every other door); raised inside the SDK's app, it would become a
    bare 500. :meth:`verify_token`, called by the SDK, then takes that verdict up.
    """

    def __init__(self, platform: Callable[[], Platform]) -> None:
        self._platform = platform

    async def verify_request(self, headers: Headers) -> None:
        """Verify the request's Bearer key now, if it sends one; the verdict is kept for
        :meth:`verify_token` within this request.

        Raises:
            sqlalchemy.exc.SQLAlchemyError: the key store cannot be read.
        """
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token:
            # In a worker thread: the key is read from the database.
            _VERIFIED.set((token, await anyio.to_thread.run_sync(self._verify, token)))

    async def verify_token(self, token: str) -> AccessToken | None:
        verified = _VERIFIED.get()
        if verified is not None and verified[0] == token:
            return verified[1]
        return await anyio.to_thread.run_sync(self._verify, token)

    def _verify(self, token: str) -> CallerToken | None:
        with self._platform().sessions() as session:
            try:
                caller = keys.authenticate(session, token)
            except AuthenticationError:
                return None  # the SDK answers 401 with WWW-Authenticate, as the HTTP door
        return CallerToken(
            token=token,
            client_id=caller.key_id,
            subject=caller.tenant_id,
            scopes=sorted(caller.scopes),
            caller=caller,
        )


def caller_of(request: Request) -> Caller:
    """The caller of an MCP request, as the bearer middleware authenticated it.

    Raises:
        AuthenticationError: no authenticated caller (the SDK refuses such requests earlier).
    """
    user = request.scope.get("user")
    if not isinstance(user, AuthenticatedUser) or not isinstance(user.access_token, CallerToken):
        raise AuthenticationError("missing API key: send 'Authorization: Bearer <key>'")
    return user.access_token.caller


def tool_lister(needs: Mapping[str, Callable[[Caller], bool]]) -> ServerMiddleware[Any]:
    """A server middleware that lists only the tools the caller may call: ``needs`` says, per
    tool, whether a caller may (a tool it does not name is listed to all). Calling a hidden
    tool is still refused by the tool itself, with the HTTP door's message."""

    async def list_allowed(
        ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        result = await call_next(ctx)
        if ctx.method != "tools/list" or not isinstance(result, dict):
            return result
        if not isinstance(ctx.request, Request):
            raise AuthenticationError("the MCP door takes requests over HTTP, with an API key")
        caller = caller_of(ctx.request)
        tools = [t for t in result.get("tools", []) if needs.get(t["name"], _anyone)(caller)]
        return {**result, "tools": tools}

    return list_allowed


def _anyone(_: Caller) -> bool:
    return True
