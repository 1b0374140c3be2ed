"""A bound on the requests inside the app at once, below the worker-thread pool's size.

Handlers, dependencies and response validation of ``def`` routes each run in AnyIO's thread
pool, one step after another, and a request may hold a lock between two steps: on SQLite every
transaction holds the database's write lock, from its first statement to its end, and a
handler's transaction can still be open while its response is validated in the next pool
thread. If every pool thread were taken by requests waiting for that lock, its holder could
never get the thread it needs to finish: all of them would wait out the busy timeout (measured
here: frozen for 30 s at ~40 requests in flight, then 503s).

So at most ``limit`` requests run inside the app, and the pool has ``limit + spare`` threads:
whatever the others do, an admitted request always finds a thread for its next step. The rest
wait here, on the event loop, holding no thread and no lock, in arrival order. Liveness and
scrapes (``/healthz``, ``/metrics``) skip the queue: they take no lock, and an orchestrator must
not mistake a busy replica for a dead one.
"""

from __future__ import annotations

import anyio
import anyio.to_thread
from starlette.types import ASGIApp, Receive, Scope, Send

# Pool threads beyond the admitted requests: liveness, scrapes, the odd background call.
SPARE_THREADS = 8
_UNQUEUED = frozenset({"/healthz", "/metrics"})


def size_thread_pool(limit: int) -> None:
    """Give AnyIO's default thread pool (Starlette's and FastAPI's) ``limit + spare`` threads.

    Call it inside the event loop (the app's lifespan): the limiter belongs to the loop.
    """
    anyio.to_thread.current_default_thread_limiter().total_tokens = limit + SPARE_THREADS


class InFlightLimitMiddleware:
    """Admit at most ``limit`` HTTP requests at once (module docstring). Pure ASGI."""

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self._limit = limit
        self._slots: anyio.Semaphore | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _UNQUEUED:
            await self.app(scope, receive, send)
            return
        if self._slots is None:  # made in the loop that serves, not at import
            self._slots = anyio.Semaphore(self._limit)
        async with self._slots:
            await self.app(scope, receive, send)
