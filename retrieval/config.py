"""Configuration models of the read path; ``app.settings.Settings`` composes them."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator


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
