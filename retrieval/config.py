"""Configuration models of the read path; ``app.settings.Settings`` composes them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)

# How a search ranks: by the dense vector, by BM25 over the chunk text, or both fused.
SearchMode = Literal["dense", "lexical", "hybrid"]
SEARCH_MODES: tuple[SearchMode, ...] = ("dense", "lexical", "hybrid")

# How hybrid search merges its two rankings: reciprocal rank fusion (weighted) or
# distribution-based score fusion (each list's scores standardised, then summed).
Fusion = Literal["rrf", "dbsf"]


class SearchOptions(BaseModel):
    """How a query searches and when it abstains: the one model of these options.

    The server's defaults (``SHOAL_RETRIEVAL__...``: ``app.settings.RetrievalConfig`` extends
    this model), a namespace's stored ``search`` settings and a query's overrides are all this
    model's fields; :meth:`overlay` layers them. Its defaults are the only ones; a test holds
    the settings, the store's :class:`~retrieval.stores.base.SearchRequest`, the OpenAPI schema
    and the README to them.
    """

    model_config = ConfigDict(frozen=True)

    mode: SearchMode = Field(
        "hybrid",
        description=(
            "`hybrid` (dense + BM25, merged as `fusion` says), `dense` or `lexical` "
            "(bench/RESULTS.md compares them)."
        ),
    )
    candidates: int = Field(
        100, ge=10, le=1000, description="Points each signal contributes to hybrid fusion."
    )
    fusion: Fusion = Field(
        "dbsf",
        description=(
            "How hybrid search merges dense and BM25: `dbsf` (distribution-based score fusion: "
            "each ranking's scores standardised, then summed; no parameters) or `rrf` "
            "(reciprocal rank fusion with `rrf_k` and the weights). bench/RESULTS.md compares them."
        ),
    )
    rrf_k: int = Field(60, ge=1, le=1000, description="The k of reciprocal rank fusion.")
    dense_weight: float = Field(
        1.0, ge=0, le=10, description="Weight of the dense ranking (`rrf` only)."
    )
    lexical_weight: float = Field(
        1.0, ge=0, le=10, description="Weight of the BM25 ranking (`rrf` only)."
    )
    rerank: bool = Field(
        False, description="Reorder the candidates with the server's reranker (if configured)."
    )
    min_score: float | None = Field(
        None,
        ge=-1.0,
        le=1.0,
        description=(
            "Override of the evidence gate: answer only when the best passage's cosine reaches "
            "this, and abstain otherwise (the single rule of earlier versions). Unset: the "
            "evidence gate decides (passage and sentence cosines, question-word coverage, "
            "margin; bench/RESULTS.md)."
        ),
    )
    evidence_threshold: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description=(
            "The evidence gate's bar: the estimated probability that the passages hold the "
            "answer, under which the answer abstains. Unset: the value fitted with "
            "`bench/calibrate.py`; lower answers more, higher abstains more, 0 never abstains "
            "on weak evidence."
        ),
    )

    def overlay(self, overrides: Mapping[str, Any]) -> SearchOptions:
        """These options with every non-None entry of ``overrides`` that names a field."""
        names = SearchOptions.model_fields
        changes = {k: v for k, v in overrides.items() if k in names and v is not None}
        return self.model_copy(update=changes) if changes else self

    def search_options(self) -> SearchOptions:
        """Only the search options (a subclass, such as the server's settings, has more)."""
        return SearchOptions(**{name: getattr(self, name) for name in SearchOptions.model_fields})


class VectorStoreConfig(BaseModel):
    """Which vector engine holds the collections; :func:`retrieval.stores.make_store` reads it."""

    url: str | None = Field(
        None,
        description=(
            "Qdrant server URL, e.g. `http://qdrant:6333`. Unset: embedded Qdrant Edge under "
            "the data directory (one process owns it)."
        ),
    )
    api_key: SecretStr | None = Field(
        None, description="API key of the Qdrant server; ignored by the embedded store."
    )
    timeout_s: float = Field(
        5.0,
        gt=0,
        description="Timeout of each call to the Qdrant server, in seconds (rounded up).",
    )


class CacheConfig(BaseModel):
    """The embedding cache (``SHOAL_CACHE__...``); ``SHOAL_REDIS_URL`` picks Redis over memory.

    :class:`retrieval.cache.MemoryCache` reads ``max_entries``; :class:`retrieval.cache.RedisCache`
    reads the rest.
    """

    max_entries: int = Field(
        50_000,
        ge=1,
        description=(
            "Vectors kept by the in-process cache (used when no Redis is set), questions and "
            "chunks alike; each costs 4 bytes per dimension plus about 0.25 KiB (1.7 KiB for "
            "all-MiniLM-L6-v2: 85 MiB at the default)."
        ),
    )
    ttl_s: int = Field(
        7 * 24 * 3600,
        ge=1,
        description=(
            "How long Redis keeps a vector after it was stored, in seconds. A vector never goes "
            "stale (its key names the model); the TTL only bounds what Redis holds."
        ),
    )
    key_prefix: str = Field(
        "shoal:embedding:",
        description="Prefix of every Redis key, so several deployments can share one Redis.",
    )
    redis_connect_timeout_s: float = Field(
        0.25, gt=0, description="Timeout of connecting to Redis, in seconds."
    )
    redis_timeout_s: float = Field(
        0.25,
        gt=0,
        description=(
            "Timeout of each Redis call, in seconds: a lookup slower than this is worth less "
            "than computing the vectors."
        ),
    )
    cooldown_s: float = Field(
        5.0,
        ge=0,
        description=(
            "After a Redis failure, the cache is skipped (all misses, nothing stored) for this "
            "many seconds, so an outage costs one timeout per period instead of one per call."
        ),
    )


class AnswerCacheConfig(BaseModel):
    """The answer cache (``SHOAL_ANSWERS__...``): what a query serves while the vector store is
    unavailable. Redis when ``SHOAL_REDIS_URL`` is set (its timeouts and cool-down are the
    embedding cache's), in-process otherwise; :mod:`retrieval.answers` reads it."""

    max_entries: int = Field(
        10_000,
        ge=1,
        description="Answers kept by the in-process cache (used when no Redis is set).",
    )
    ttl_s: int = Field(
        24 * 3600,
        ge=1,
        description=(
            "How long an answer is kept, in seconds. Answers are dropped sooner when their "
            "namespace's documents change; the TTL bounds staleness should that signal be lost "
            "(Redis down at the moment of the change)."
        ),
    )
    key_prefix: str = Field("shoal:answer:", description="Prefix of the answer cache's Redis keys.")


class BreakerConfig(BaseModel):
    """Circuit breakers and call timeouts (:mod:`retrieval.resilience`); ``app.settings`` builds
    it from its ``SHOAL_BREAKER_...`` and ``SHOAL_STORE_...`` fields, which document each one."""

    model_config = ConfigDict(frozen=True)

    reset_s: float = Field(10.0, gt=0)
    failure_threshold: int = Field(5, ge=1)
    failure_rate: float = Field(0.5, gt=0, le=1)
    min_calls: int = Field(20, ge=1)
    half_open_probes: int = Field(1, ge=1)
    store_timeout_s: float = Field(5.0, gt=0)
    store_write_timeout_s: float = Field(30.0, gt=0)


class EndpointConfig(BaseModel):
    """One OpenAI-compatible endpoint of a route."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        min_length=1,
        description="API root ending in `/v1`, e.g. `http://vllm:8000/v1` (vLLM, Ollama, TGI, "
        "llama.cpp server, or a hosted API).",
    )

    @field_validator("url")
    @classmethod
    def _is_http_url(cls, url: str) -> str:
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 (raises on a bad port)
        except ValueError as exc:
            raise ValueError(f"not a URL: {exc}") from exc
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        return url

    model: str = Field(min_length=1, description="The model name the endpoint serves.")
    weight: float = Field(1.0, gt=0, le=1000, description="Share of traffic, relative.")
    api_key_env: str | None = Field(
        None,
        pattern=r"^[A-Z_][A-Z0-9_]*$",
        description=(
            "Name of the server's environment variable holding the endpoint's API key: keys "
            "are never stored in the database or returned by the API."
        ),
    )
    # The key itself, read from ``api_key_env`` once, when the settings load (never from the
    # request path, never serialised): see :meth:`read_key`.
    _api_key: SecretStr | None = PrivateAttr(None)

    @property
    def api_key(self) -> SecretStr | None:
        """The endpoint's API key, as read by :meth:`read_key`; None if it needs none."""
        return self._api_key

    def read_key(self, environ: Mapping[str, str]) -> None:
        """Take the key from ``environ[api_key_env]`` (none when unset or missing there)."""
        value = environ.get(self.api_key_env) if self.api_key_env else None
        self._api_key = SecretStr(value) if value else None


class RouteConfig(BaseModel):
    """A generation route: a backend and its model(s)."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["openai", "local", "extractive"] = Field(
        description="`openai` (any OpenAI-compatible endpoint), `local` (a transformers model "
        "on this machine) or `extractive` (quotes, no model)."
    )
    endpoints: list[EndpointConfig] = Field(
        default_factory=list, max_length=32, description="`openai`: one or more endpoints."
    )
    model_path: str | None = Field(
        None, description="`local`: a transformers model directory (or one holding a GGUF)."
    )
    gguf_file: str | None = Field(None, description="`local`: a GGUF file in `model_path`.")
    context_window: int = Field(8192, ge=256, le=2_000_000, description="Prompt + answer.")
    max_output_tokens: int = Field(512, ge=1, le=32_768, description="Longest answer.")
    timeout_s: float = Field(30.0, gt=0, le=600, description="Per call, and per streamed gap.")

    @model_validator(mode="after")
    def _backend_has_what_it_needs(self) -> RouteConfig:
        if self.backend == "openai" and not self.endpoints:
            raise ValueError("an openai route needs at least one endpoint")
        if self.backend == "local" and not self.model_path:
            raise ValueError("a local route needs model_path")
        if self.max_output_tokens >= self.context_window:
            raise ValueError("max_output_tokens must be less than context_window")
        return self


class RoutingPolicyConfig(BaseModel):
    """When `auto` routing picks the large route (any one reason suffices)."""

    model_config = ConfigDict(extra="forbid")

    long_question_tokens: int = Field(40, ge=1, description="Questions longer than this.")
    large_context_tokens: int = Field(1500, ge=1, description="Retrieved context above this.")
    ambiguous_margin: float = Field(
        0.02, ge=0, le=1, description="Top-2 passage cosine margin below this."
    )
    analytical_to_large: bool = Field(True, description="why/how/explain/compare questions.")


GENERATOR_NAME = r"^[a-z0-9][a-z0-9_.-]{0,63}$"


class RoutesConfig(BaseModel):
    """A namespace's (or the server's default) `small` and `large` routes.

    Each names a generator of the operator's catalog (``SHOAL_GENERATORS``), never an endpoint:
    a tenant admin choosing URLs, key variables or model paths could make the server send its
    secrets to any host, reach internal addresses or load any file.
    """

    model_config = ConfigDict(extra="forbid")

    small: str | None = Field(None, pattern=GENERATOR_NAME, description="A generator's name.")
    large: str | None = Field(None, pattern=GENERATOR_NAME, description="A generator's name.")
    policy: RoutingPolicyConfig = Field(default_factory=RoutingPolicyConfig)
