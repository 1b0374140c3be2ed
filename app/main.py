"""The FastAPI application factory: the only place (with the CLI) that wires everything."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.routing import Route

from app.console import install_console
from app.gateway.body_limit import BodyLimitMiddleware
from app.gateway.in_flight import InFlightLimitMiddleware, size_thread_pool
from app.gateway.limit_headers import RateLimitHeadersMiddleware
from app.gateway.openapi import openai_error_responses, problem_responses
from app.gateway.problems import install_problem_handlers
from app.gateway.request_id import RequestIdMiddleware
from app.mcp.server import PATH as MCP_PATH
from app.mcp.server import McpDoor
from app.metrics import (
    MetricsMiddleware,
    metrics_endpoint,
    register_gpu_metrics,
    track_queue_depth,
)
from app.platform import Platform, build_platform
from app.routers import (
    admin,
    documents,
    faults,
    health,
    jobs,
    namespaces,
    openai_compat,
    query,
)
from app.settings import Settings, get_settings

VERSION = "0.1.0"  # as in pyproject.toml: the OpenAPI document and MCP serverInfo say it

# Probes and scrapes: frequent, and nothing to learn from their traces.
_UNTRACED = frozenset({"/healthz", "/readyz", "/metrics"})


def create_app(settings: Settings | None = None, *, platform: Platform | None = None) -> FastAPI:
    """Build the app. The schema must be migrated (``shoal serve`` and ``shoal db upgrade`` do it).

    ``platform`` lets a caller (tests, ``shoal serve``) share or own the adapters; by default
    the app builds its own on start-up and closes them on shutdown.
    """
    settings = settings or get_settings()
    mcp = McpDoor(settings, version=VERSION)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = platform is None
        size_thread_pool(settings.api.max_in_flight)
        running = platform or build_platform(settings)
        app.state.platform = running
        track_queue_depth(settings.workers.queue, running.queue.depth)
        register_gpu_metrics()
        running.warm_up_in_background()
        running.recover_pending()
        running.usage.start()
        try:
            async with mcp.serving(running):
                yield
        finally:
            if owned:
                running.close()

    app = FastAPI(
        title="Shoal",
        version=VERSION,
        summary="Multi-tenant RAG: upload documents, ask questions, get cited answers.",
        lifespan=lifespan,
        # FastAPI's own OpenTelemetry: spans per request and per operation, exported over
        # OTLP/HTTP only when the standard OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT is set (no
        # endpoint, no exporter). Metrics and logs stay with Prometheus and the JSON logs.
        telemetry={
            "auto_configure": True,
            "metrics": False,
            "logs": False,
            "exclude": lambda scope: scope.get("path") in _UNTRACED,
        },
    )
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_upload_mb * 1024 * 1024)
    app.add_middleware(InFlightLimitMiddleware, limit=settings.api.max_in_flight)
    app.add_middleware(RateLimitHeadersMiddleware)
    app.add_middleware(MetricsMiddleware)
    app.add_middleware(RequestIdMiddleware)
    install_problem_handlers(app)
    app.include_router(health.router)
    for module in (admin, namespaces, documents, jobs, query):
        app.include_router(module.router, responses=problem_responses())
    app.include_router(openai_compat.router, responses=openai_error_responses())
    if settings.enable_faults:  # otherwise the drill endpoints do not exist (404)
        app.include_router(faults.router, responses=problem_responses())
    app.add_route("/metrics", metrics_endpoint, include_in_schema=False)
    install_console(app, settings)
    # An ASGI app as the endpoint: the MCP SDK answers every method itself (POST; GET and
    # DELETE with 405, as a stateless server). Documented in the README, not in OpenAPI.
    app.router.routes.append(Route(MCP_PATH, endpoint=mcp, include_in_schema=False))
    return app
