"""The MCP door at ``/mcp``: Shoal's tools (:mod:`app.mcp.tools`) on the official SDK's
``MCPServer``, over Streamable HTTP, stateless with JSON responses, so that any replica can
answer any request (no session lives in a process). Requests pass the app's own middleware
(request id, in-flight bound, body limit, metrics) like every other route."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import AnyHttpUrl
from starlette.datastructures import Headers
from starlette.types import Receive, Scope, Send

from app.config import McpConfig
from app.mcp.auth import CallerToken, KeyVerifier, tool_lister
from app.mcp.tools import NEEDS, add_tools
from app.platform import Platform
from app.settings import Settings

PATH = "/mcp"
INSTRUCTIONS = (
    "Shoal holds the documents of your organisation in namespaces. list_namespaces shows the "
    "ones this key may use; search returns the best-matching passages of one, answer a cited "
    "answer (answerable: false when its documents do not hold one); with the write scope, "
    "add_documents adds documents and job_status follows their indexing."
)
# The SDK asks for an authorization server's URL with any token verifier. Shoal issues its own
# keys and publishes no OAuth metadata (no resource_server_url), so this is never sent.
_NO_ISSUER = AnyHttpUrl("http://127.0.0.1")


class McpDoor:
    """The MCP server, and the ASGI app the ``/mcp`` route hands requests to.

    Built with the app; :meth:`serving` (in the app's lifespan) hands it the running platform
    and runs the SDK's session manager. One door serves one lifespan.
    """

    def __init__(self, settings: Settings, *, version: str) -> None:
        self._platform: Platform | None = None
        self._keys = KeyVerifier(self.platform)
        self.server: MCPServer[Platform] = MCPServer(
            "shoal",
            title="Shoal",
            version=version,
            instructions=INSTRUCTIONS,
            token_verifier=self._keys,
            auth=AuthSettings(issuer_url=_NO_ISSUER, resource_server_url=None),
            lifespan=self._lifespan,
            subscriptions=False,  # no notifications to listen for: nothing to pin to a replica
            middleware=[tool_lister(NEEDS)],
        )
        add_tools(self.server)
        self._http = self.server.streamable_http_app(
            streamable_http_path=PATH,
            stateless_http=True,
            json_response=True,
            transport_security=transport_security(settings.mcp),
            max_request_body_size=settings.max_upload_mb * 1024 * 1024,
        )

    def platform(self) -> Platform:
        if self._platform is None:
            raise RuntimeError("the MCP door is not serving: enter McpDoor.serving first")
        return self._platform

    @asynccontextmanager
    async def serving(self, platform: Platform) -> AsyncIterator[None]:
        """Serve ``/mcp`` on ``platform`` until the block ends (the app's lifespan)."""
        self._platform = platform
        async with self.server.session_manager.run():
            yield

    @asynccontextmanager
    async def _lifespan(self, _: MCPServer[Platform]) -> AsyncIterator[Platform]:
        yield self.platform()  # the tools' ctx.request_context.lifespan_context

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            # Before the SDK's app: a database outage here is the app's 503, not the SDK's 500.
            await self._keys.verify_request(Headers(scope=scope))
        try:
            await self._http(scope, receive, send)
        finally:
            # The access log's ids (app.metrics), as the HTTP door's authentication leaves them.
            user = scope.get("user")
            if isinstance(user, AuthenticatedUser) and isinstance(user.access_token, CallerToken):
                caller = user.access_token.caller
                state = scope.setdefault("state", {})
                state["key_id"], state["tenant_id"] = caller.key_id, caller.tenant_id


def transport_security(config: McpConfig) -> TransportSecuritySettings:
    """The SDK's Host and Origin checks from ``SHOAL_MCP__...`` (``["*"]``: no check)."""
    if "*" in config.allowed_hosts:
        return TransportSecuritySettings(enable_dns_rebinding_protection=False)
    return TransportSecuritySettings(
        allowed_hosts=config.allowed_hosts, allowed_origins=config.allowed_origins
    )
