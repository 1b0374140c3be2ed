"""One request-body limit for every route: ``SHOAL_MAX_UPLOAD_MB``.

Without it only uploads were bounded: FastAPI reads a JSON body whole before validating it, so
a gigabyte sent to ``/query`` sat in memory before its 422. A declared ``Content-Length`` over
the limit is refused before the app runs; a body without one (chunked) is counted as the app
reads it and refused once it passes the limit. Both answers are ``/problems/payload-too-large``.

Not Starlette's ``RequestBodyLimitMiddleware`` (FastAPI's ``max_body_size``): when a handler
answers without reading the body, it swaps that answer for a plain-text 413.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.gateway.problems import PAYLOAD_TOO_LARGE, problem_response


class BodyLimitMiddleware:
    """Pure ASGI middleware refusing request bodies over ``max_bytes`` with a 413 problem."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        detail = f"request body over the {self.max_bytes // (1024 * 1024)} MiB limit"
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            response = problem_response(Request(scope), PAYLOAD_TOO_LARGE, detail)
            await response(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # An HTTPException passes through FastAPI's body parsing unchanged (any
                    # other error there becomes a 400); the problem handlers answer it as 413.
                    raise HTTPException(413, detail)
            return message

        await self.app(scope, counting_receive, send)
