"""Prometheus metrics, exported at ``/metrics``.

Names follow Prometheus conventions (``_seconds``, ``_total``). Route labels use the route
template (``/v1/namespaces/{ns}/query``), never the raw path, so tenants' names cannot explode
the label cardinality.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import structlog
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    Metric,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger(__name__)

REQUEST_SECONDS = Histogram(
    "shoal_http_request_duration_seconds",
    "HTTP request latency by door (http: Shoal's own API, openai: /v1/openai, mcp: /mcp), "
    "method, route template and status.",
    ["door", "method", "route", "status"],
)
# The doors requests come in by, from their route template's prefix; any other is `http`.
DOORS = (("/v1/openai", "openai"), ("/mcp", "mcp"))
MCP_TOOL_CALLS = Counter(
    "shoal_mcp_tool_calls_total",
    "MCP tool calls by tool and outcome: `ok`, or the problem type's slug of the error "
    "(`not-found`, `rate-limited`, ...) the tool answered with.",
    ["tool", "outcome"],
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
    "sentences the extractive answer scores, embeddings: texts sent to /v1/openai/embeddings) "
    "and result (hit, miss).",
    ["use", "result"],
)
for _use in (
    "query",
    "ingest",
    "answer",
):  # exported at zero from the start, not from the first lookup
    for _result in ("hit", "miss"):
        EMBEDDING_CACHE.labels(_use, _result)
QUEUE_DEPTH = Gauge(
    "shoal_queue_depth",
    "Indexing tasks waiting: messages in the broker queue (distributed; -1 when the broker "
    "cannot be asked) or tasks accepted and not finished (the in-process runner). An "
    "autoscaling signal for workers.",
    ["queue"],
)
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

RATE_LIMIT_BACKEND = Gauge(
    "shoal_rate_limit_backend",
    "1 for the limiter now counting budgets: `redis` (shared by all replicas) or `local` "
    "(in process: the embedded mode, or a fail-open fallback while Redis is down).",
    ["backend"],
)
RATE_LIMIT_FALLBACKS = Counter(
    "shoal_rate_limit_fallbacks_total",
    "Limit checks made while Redis was unavailable, by failure mode (open: counted locally "
    "with budget / replicas; closed: refused with a 503).",
    ["mode"],
)
RATE_LIMITED = Counter(
    "shoal_rate_limited_total",
    "Requests refused with a 429, by budget owner (tenant, key) and quota.",
    ["owner", "quota"],
)

BREAKER_STATE = Gauge(
    "shoal_breaker_state",
    "State of each circuit breaker: 0 closed, 1 half-open, 2 open. Breakers: `vector_store`, "
    "and `generator:<name>:<endpoint index>` per LLM endpoint.",
    ["breaker"],
)
BREAKER_TRANSITIONS = Counter(
    "shoal_breaker_transitions_total",
    "Circuit breaker transitions, by breaker, from state and to state.",
    ["breaker", "from", "to"],
)
DEGRADED_ANSWERS = Counter(
    "shoal_degraded_answers_total",
    "Queries answered while the search could not run, by what they served: `cache` (the "
    "cached answer) or `none` (an answer saying there is none).",
    ["source"],
)
for _source in ("cache", "none"):
    DEGRADED_ANSWERS.labels(_source)
_BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}


def record_breaker_transition(name: str, before: str, after: str) -> None:
    """A :class:`retrieval.resilience.CircuitBreaker` ``on_transition`` listener."""
    BREAKER_TRANSITIONS.labels(name, before, after).inc()
    BREAKER_STATE.labels(name).set(_BREAKER_STATES[after])


def track_breaker(name: str, state: Callable[[], str]) -> None:
    """Read a breaker's state at scrape time (so an open breaker whose reset period is over
    shows half-open before the next call probes)."""
    BREAKER_STATE.labels(name).set_function(lambda: float(_BREAKER_STATES[state()]))


def count_cache_lookups(use: str) -> Callable[[int, int], None]:
    """A :class:`retrieval.cached_embedder.CachedEmbedder` ``on_lookup`` counting under ``use``."""
    hits, misses = EMBEDDING_CACHE.labels(use, "hit"), EMBEDDING_CACHE.labels(use, "miss")

    def count(hit_count: int, miss_count: int) -> None:
        hits.inc(hit_count)
        misses.inc(miss_count)

    return count


def track_queue_depth(queue: str, depth: Callable[[], int]) -> None:
    """Read the queue depth at scrape time from the running platform's queue."""
    QUEUE_DEPTH.labels(queue).set_function(lambda: float(depth()))


class GpuCollector:
    """GPU utilisation and memory, read from NVML at scrape time.

    ``shoal_gpu_count`` is always exported (0 without an NVIDIA driver, so a dashboard can
    tell "no GPU" from "no data"); the per-GPU series only where NVML answers. NVML is asked
    at scrape time, never on a request path.
    """

    def __init__(self) -> None:
        self._nvml: Any = None
        self._started = False
        self._lock = threading.Lock()

    def _start(self) -> Any:  # Any: the pynvml module, or None
        with self._lock:
            if not self._started:
                self._started = True
                try:
                    import pynvml

                    pynvml.nvmlInit()
                    self._nvml = pynvml
                except Exception as exc:  # no driver, no library: no GPU to report
                    log.debug("nvml_unavailable", error=str(exc))
            return self._nvml

    def collect(self) -> Iterator[Metric]:
        nvml = self._start()
        count = GaugeMetricFamily("shoal_gpu_count", "NVIDIA GPUs this process can see.")
        utilisation = GaugeMetricFamily(
            "shoal_gpu_utilization_ratio",
            "Share of the last sample period the GPU was busy (0-1), per GPU index.",
            labels=["gpu"],
        )
        memory = GaugeMetricFamily(
            "shoal_gpu_memory_used_bytes", "GPU memory in use, per GPU index.", labels=["gpu"]
        )
        total = GaugeMetricFamily(
            "shoal_gpu_memory_total_bytes", "GPU memory, per GPU index.", labels=["gpu"]
        )
        gpus = 0
        if nvml is not None:
            try:
                gpus = nvml.nvmlDeviceGetCount()
                for index in range(gpus):
                    handle = nvml.nvmlDeviceGetHandleByIndex(index)
                    rates = nvml.nvmlDeviceGetUtilizationRates(handle)
                    info = nvml.nvmlDeviceGetMemoryInfo(handle)
                    utilisation.add_metric([str(index)], rates.gpu / 100)
                    memory.add_metric([str(index)], float(info.used))
                    total.add_metric([str(index)], float(info.total))
            except Exception as exc:  # a GPU that fell off the bus: report what was read
                log.warning("nvml_read_failed", error=str(exc))
        count.add_metric([], gpus)
        yield from (count, utilisation, memory, total)


_gpu_collector: GpuCollector | None = None


def register_gpu_metrics() -> None:
    """Export the GPU gauges from this process (once; the API and workers both call it)."""
    global _gpu_collector
    if _gpu_collector is None:
        _gpu_collector = GpuCollector()
        REGISTRY.register(_gpu_collector)


def door_of(route: str) -> str:
    """The door of a route template: ``openai``, ``mcp``, or ``http`` for the rest."""
    for prefix, door in DOORS:
        if route == prefix or route.startswith(prefix + "/"):
            return door
    return "http"


def metrics_endpoint(_: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


class MetricsMiddleware:
    """Times every HTTP request, labels it with its route template, and logs it."""

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
            elapsed = time.perf_counter() - started
            door = door_of(template)
            REQUEST_SECONDS.labels(door, scope["method"], template, str(status)).observe(elapsed)
            # The access log: one line per request, with the ids the request id middleware
            # bound and those authentication left in the request's state (it runs in a worker
            # thread, whose context variables do not come back here). Never the key itself.
            state = scope.get("state", {})
            log.info(
                "http_request",
                door=door,
                method=scope["method"],
                route=template,
                status=status,
                duration_ms=round(elapsed * 1000, 2),
                tenant_id=state.get("tenant_id"),
                key_id=state.get("key_id"),
            )
