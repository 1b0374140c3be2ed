"""``RateLimit-*`` headers on every response of a rate-limited caller."""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.services.limits import rate_limit_headers


class RateLimitHeadersMiddleware:
    """Adds the ``RateLimit-*`` headers of the request's budget (left in ``request.state`` by
    the authentication dependency) to every response, successes and errors alike, unless the
    response set its own (a 429 describes the budget that refused it). Pure ASGI."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_limits(message: Message) -> None:
            if message["type"] == "http.response.start":
                decision = scope.get("state", {}).get("rate_limit")
                if decision is not None:
                    headers = MutableHeaders(scope=message)
                    if "ratelimit-limit" not in headers:
                        headers.update(rate_limit_headers(decision))
            await send(message)

        await self.app(scope, receive, send_with_limits)
