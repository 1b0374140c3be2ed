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
    "Latency of one stage of a query (embed, search, rerank, generate).",
    ["stage"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
DOCUMENTS = Counter(
    "shoal_documents_total", "Documents that finished indexing, by outcome.", ["outcome"]
)
EMBEDDING_CACHE = Counter(
    "shoal_embedding_cache_requests_total",
    "Embedding cache lookups, one per text, by use (query: questions, ingest: chunks, answer: "
    "sentences the extractive answer scores) and result (hit, miss).",
    ["use", "result"],
)
for _use in (
    "query",
    "ingest",
    "answer",
):  # exported at zero from the start, not from the first lookup
    for _result in ("hit", "miss"):
        EMBEDDING_CACHE.labels(_use, _result)
QUEUE_DEPTH = Gauge("shoal_queue_depth", "Indexing tasks accepted and not finished.")
ROUTE_DECISIONS = Counter(
    "shoal_route_decisions_total",
    "Answers by the route that produced them (small, large, extractive), whether the caller "
    "asked for it (requested) or auto-routing chose it, and whether it was a fallback.",
    ["route", "decided_by", "fallback"],
)
TIME_TO_FIRST_TOKEN = Histogram(
    "shoal_time_to_first_token_seconds",
    "From receiving a streamed query to sending its first answer token, by route.",
    ["route"],
    buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
GENERATION_TOKENS = Counter(
    "shoal_generation_tokens_total", "Tokens billed by generation backends.", ["route", "kind"]
)


def count_cache_lookups(use: str) -> Callable[[int, int], None]:
    """A :class:`retrieval.cache.CachedEmbedder` ``on_lookup`` that counts under ``use``."""
    hits, misses = EMBEDDING_CACHE.labels(use, "hit"), EMBEDDING_CACHE.labels(use, "miss")

    def count(hit_count: int, miss_count: int) -> None:
        hits.inc(hit_count)
        misses.inc(miss_count)

    return count


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
