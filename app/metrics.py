"""Prometheus metrics, exported at ``/metrics``.

Names follow Prometheus conventions (``_seconds``, ``_total``). Route labels use the route
template (``/v1/namespaces/{ns}/query``), never the raw path, so tenants' names cannot explode
the label cardinality.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_SECONDS = Histogram(
    "shoal_http_request_duration_seconds",
    "HTTP request latency by method, route template and status.",
    ["method", "route", "status"],
)
STAGE_SECONDS = Histogram(
    "shoal_stage_duration_seconds",
    "Latency of one stage of a query (embed, search, generate).",
    ["stage"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
DOCUMENTS = Counter(
    "shoal_documents_total", "Documents that finished indexing, by outcome.", ["outcome"]
)
EMBEDDING_CACHE = Counter(
    "shoal_embedding_cache_requests_total", "Question-embedding cache lookups.", ["result"]
)
QUEUE_DEPTH = Gauge("shoal_queue_depth", "Indexing tasks accepted and not finished.")


def track_queue_depth(depth: Callable[[], int]) -> None:
    """Read the queue depth at scrape time from the running platform's queue."""
    QUEUE_DEPTH.set_function(lambda: float(depth()))


def metrics_endpoint(_: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


class MetricsMiddleware:
    """Times every HTTP request and labels it with its route template."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            REQUEST_SECONDS.labels(scope["method"], template, str(status)).observe(
                time.perf_counter() - started
            )
