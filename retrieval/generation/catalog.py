"""The operator's generation backends, built once, and the dispatchers that route over them.

The operator defines the generation backends (``SHOAL_GENERATORS``: endpoints, key variables,
model paths); a namespace's ``routes`` (or, when it sets none, the server's ``SHOAL_ROUTES``)
only pick ``small`` and ``large`` from that catalog by name. Tenants therefore never choose
where the server connects or what it loads. Backends hold connections (OpenAI clients) or whole
models (local), so each generator is built once per process, on first use, and shared.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError

from retrieval.cache import scoped
from retrieval.config import RouteConfig, RoutesConfig
from retrieval.errors import RoutesError
from retrieval.generation.base import GenerationBackend
from retrieval.generation.endpoints import EndpointPool
from retrieval.generation.routing import Dispatcher, RouteName, RoutePolicy


def parse_routes(raw: Mapping[str, Any]) -> RoutesConfig:
    """A stored or submitted ``routes`` object, validated.

    Raises:
        RoutesError: it does not describe routes; ``field`` names the culprit.
    """
    try:
        return RoutesConfig.model_validate(dict(raw))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in ("routes", *first["loc"]))
        raise RoutesError(f"{where}: {first['msg']}", field=where) from exc


def check_routes(routes: RoutesConfig, generators: Mapping[str, RouteConfig]) -> None:
    """Raise :class:`RoutesError` unless every route names a configured generator."""
    for route in ("small", "large"):
        name = getattr(routes, route)
        if name is not None and name not in generators:
            configured = ", ".join(sorted(generators)) or "none"
            raise RoutesError(
                f"routes.{route}: no generator named {name!r} (configured: {configured})",
                field=f"routes.{route}",
            )


# Wraps each endpoint's backend as it is built, given the generator's name and the endpoint's
# index: the platform puts each behind its own circuit breaker (and fault drills).
BackendWrapper = Callable[[str, int, GenerationBackend], GenerationBackend]


class RouteCatalog:
    """The operator's generators by name, each route's endpoints built once, and a
    :class:`~retrieval.generation.routing.Dispatcher` for each route configuration."""

    def __init__(
        self,
        *,
        generators: Mapping[str, RouteConfig],
        default: RoutesConfig,
        extractive: GenerationBackend,
        min_score: float | None,
        wrap: BackendWrapper | None = None,
    ) -> None:
        check_routes(default, generators)
        self.generators = dict(generators)
        self._default = default
        self._extractive = extractive
        self._min_score = min_score
        self._wrap = wrap
        self._pools: dict[str, EndpointPool] = {}  # by generator name: bounded by the catalog
        self._lock = threading.Lock()

    def dispatcher(self, routes: Mapping[str, Any], *, scope: str) -> Dispatcher:
        """The dispatcher for a namespace's stored ``routes`` ({} means the server's default),
        answering on behalf of ``scope`` (the namespace's tenant: the extractive backend's
        sentence vectors are cached in its entries).

        A stored route whose generator the operator has since removed answers extractively
        rather than failing every query of the namespace.

        Raises:
            RoutesError: the stored ``routes`` do not describe routes.
        """
        config = parse_routes(routes) if routes else self._default
        chosen: dict[RouteName, RouteConfig] = {}
        for route in ("small", "large"):
            name = getattr(config, route)
            generator = self.generators.get(name) if name is not None else None
            if generator is not None:
                chosen[route] = generator
        return Dispatcher(
            small=self._pool(config.small),
            large=self._pool(config.large),
            extractive=scoped(self._extractive, scope),
            policy=RoutePolicy(**config.policy.model_dump()),
            generators=chosen,
        )

    def _pool(self, name: str | None) -> EndpointPool | None:
        route = self.generators.get(name) if name is not None else None
        if name is None or route is None or route.backend == "extractive":
            return None
        with self._lock:
            pool = self._pools.get(name)
            if pool is None:
                backends = self._backends(route)
                if self._wrap is not None:
                    wrap = self._wrap
                    backends = [(wrap(name, i, b), w) for i, (b, w) in enumerate(backends)]
                pool = EndpointPool(backends)
                self._pools[name] = pool
            return pool

    def _backends(self, route: RouteConfig) -> list[tuple[GenerationBackend, float]]:
        if route.backend == "local":
            from retrieval.generation.local import LocalBackend

            assert route.model_path is not None  # noqa: S101 (checked by RouteConfig)
            local = LocalBackend(
                route.model_path,
                gguf_file=route.gguf_file,
                max_new_tokens=route.max_output_tokens,
                context_window=route.context_window,
                min_score=self._min_score,
            )
            return [(local, 1.0)]
        from retrieval.generation.openai import OpenAIBackend

        return [
            (
                OpenAIBackend(
                    endpoint.url,
                    endpoint.model,
                    api_key=endpoint.api_key.get_secret_value() if endpoint.api_key else None,
                    context_window=route.context_window,
                    max_output_tokens=route.max_output_tokens,
                    timeout_s=route.timeout_s,
                    min_score=self._min_score,
                ),
                endpoint.weight,
            )
            for endpoint in route.endpoints
        ]
