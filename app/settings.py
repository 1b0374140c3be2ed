"""The one settings object: environment variables with the ``SHOAL_`` prefix.

Nested models use ``__``: ``SHOAL_CHUNKING__OVERLAP_TOKENS=64``. Unset service URLs mean the
embedded default (SQLite, Qdrant Edge, in-process cache and task runner) under ``data_dir``.
Code below :mod:`app` receives its own sub-model and never reads the environment.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.config import ApiConfig, ConsoleConfig, LimitsConfig, McpConfig, WorkerConfig
from ingestion.config import ChunkingConfig, EmbeddingConfig, IngestionConfig
from retrieval.config import (
    AnswerCacheConfig,
    BreakerConfig,
    CacheConfig,
    RouteConfig,
    RoutesConfig,
    SearchOptions,
    VectorStoreConfig,
)


class RetrievalConfig(SearchOptions):
    """Query defaults (``SHOAL_RETRIEVAL__...``): the search options every namespace starts
    from (:class:`retrieval.config.SearchOptions`, whose fields and defaults these are), and
    the server-wide rest."""

    model_config = ConfigDict(frozen=False)

    top_k: int = Field(5, ge=1, le=50, description="Passages retrieved when a query names none.")
    max_answer_sentences: int = Field(
        3, ge=1, le=20, description="Sentences quoted by the extractive answer."
    )
    reranker: str = Field(
        "identity",
        description=(
            "`identity` (keep the search order) or `cross-encoder:/path/to/model`, a local "
            "sentence-transformers CrossEncoder directory; used by namespaces or queries that "
            "ask to rerank."
        ),
    )
    rerank_candidates: int = Field(
        30, ge=1, le=100, description="Passages handed to the reranker, which keeps top_k."
    )

    @model_validator(mode="before")
    @classmethod
    def _cache_entries_moved(cls, data: Any) -> Any:  # Any: the raw input, before validation
        # The cache now serves indexing too; refuse the old name at start-up rather than
        # silently ignore an operator's limit.
        if isinstance(data, dict) and "embedding_cache_entries" in data:
            raise ValueError(
                "SHOAL_RETRIEVAL__EMBEDDING_CACHE_ENTRIES is now SHOAL_CACHE__MAX_ENTRIES"
            )
        return data


class Settings(BaseSettings):
    """Every setting a deployment can name; the README's settings table lists each one."""

    model_config = SettingsConfigDict(
        env_prefix="SHOAL_", env_nested_delimiter="__", extra="ignore"
    )

    data_dir: Path = Field(
        Path(".shoal"), description="Root of embedded storage (SQLite file, Qdrant Edge shards)."
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL; `postgresql://` accepted. Unset: SQLite under data_dir.",
    )
    redis_url: str | None = Field(
        None,
        description=(
            "Redis for shared caches (the embedding cache, `SHOAL_CACHE__...`) and limits. "
            "Unset: in-process."
        ),
    )
    broker_url: str | None = Field(
        None, description="Celery broker (Redis or RabbitMQ). Unset: in-process task runner."
    )
    qdrant_url: str | None = Field(
        None, description="Qdrant server URL. Unset: Qdrant Edge under data_dir."
    )
    qdrant_api_key: SecretStr | None = Field(None, description="API key of the Qdrant server.")
    bootstrap_key: SecretStr | None = Field(
        None,
        description=(
            "A `shoal_<id>_<secret>` platform key installed on an empty database instead of a "
            "generated one."
        ),
    )
    max_upload_mb: int = Field(100, ge=1, description="Largest request body (uploads too), in MiB.")
    log_level: str = Field("INFO", description="Log level of the JSON logs.")
    store_timeout_s: float = Field(
        5.0,
        gt=0,
        le=600,
        description=(
            "Longest wait for a vector-store read (search, count, readiness ping), in seconds: "
            "the most a stalled store holds a query before it answers degraded. A call that "
            "times out counts as a failure for the breaker."
        ),
    )
    store_write_timeout_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description=(
            "Longest wait for a vector-store write (upsert, delete, create, drop), in seconds; "
            "indexing retries a write that times out. The Qdrant client's own timeout is the "
            "larger of the two (whole seconds)."
        ),
    )
    breaker_reset_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description=(
            "How long an open circuit breaker (vector store, or one generation endpoint) refuses "
            "calls before letting probes through (half-open), in seconds; also the `Retry-After` "
            "of a degraded answer."
        ),
    )
    breaker_failure_threshold: int = Field(
        5, ge=1, le=1000, description="Consecutive failed calls that open a breaker."
    )
    breaker_failure_rate: float = Field(
        0.5,
        gt=0,
        le=1,
        description=(
            "Share of failed calls among the last `SHOAL_BREAKER_MIN_CALLS` that opens a "
            "breaker (intermittent failures that never reach the consecutive threshold)."
        ),
    )
    breaker_min_calls: int = Field(
        20,
        ge=1,
        le=10_000,
        description="Calls a breaker must have seen (its window) before the failure rate counts.",
    )
    breaker_half_open_probes: int = Field(
        1,
        ge=1,
        le=100,
        description=(
            "Calls a half-open breaker lets through at once; that many successes close it, one "
            "failure opens it again."
        ),
    )
    enable_faults: bool = Field(
        False,
        description=(
            "Mount the fault drill endpoints (`/v1/admin/faults`) and wrap the vector store, "
            "embedder, LLM backends, caches and task queue so drills can fail or slow them. "
            "Off: the endpoints are 404 and nothing is wrapped."
        ),
    )
    api: ApiConfig = ApiConfig()
    workers: WorkerConfig = WorkerConfig()
    embedding: EmbeddingConfig = EmbeddingConfig()
    chunking: ChunkingConfig = ChunkingConfig()
    ingestion: IngestionConfig = IngestionConfig()
    retrieval: RetrievalConfig = RetrievalConfig()
    limits: LimitsConfig = LimitsConfig()
    console: ConsoleConfig = ConsoleConfig()
    generators: dict[str, RouteConfig] = Field(
        default_factory=dict,
        description=(
            "The operator's catalog of generation backends, by name, as JSON "
            '(`SHOAL_GENERATORS=\'{"fast": {"backend": "openai", "endpoints": [...]}}\'`). '
            "Routes (the server's and each namespace's) choose from it by name."
        ),
    )
    routes: RoutesConfig = Field(
        default_factory=RoutesConfig,
        description=(
            "Default `small`/`large` routes of namespaces that set none: generator names "
            '(`SHOAL_ROUTES=\'{"small": "fast", "large": "big"}\'`). Unset: '
            "extractive answers."
        ),
    )

    @model_validator(mode="after")
    def _routes_name_generators(self) -> Settings:
        for route in ("small", "large"):
            if (name := getattr(self.routes, route)) is not None and name not in self.generators:
                raise ValueError(
                    f"SHOAL_ROUTES {route}={name!r} is not in SHOAL_GENERATORS "
                    f"({sorted(self.generators) or 'empty'})"
                )
        for endpoint in (e for g in self.generators.values() for e in g.endpoints):
            endpoint.read_key(os.environ)  # here, once: routing never reads the environment
        return self

    cache: CacheConfig = CacheConfig()
    answers: AnswerCacheConfig = AnswerCacheConfig()
    mcp: McpConfig = McpConfig()

    @field_validator("bootstrap_key")
    @classmethod
    def _bootstrap_key_has_key_shape(cls, value: SecretStr | None) -> SecretStr | None:
        # Fail at start-up, not at the first request, when the operator's key is malformed.
        if value is not None and not value.get_secret_value().startswith("shoal_"):
            raise ValueError("must be a key of the form shoal_<id>_<secret>")
        return value

    @property
    def model_cache_dir(self) -> Path:
        """Where the ONNX embedding backend keeps the files it exports from the model."""
        return self.data_dir / "models"

    @property
    def resolved_database_url(self) -> str:
        """The SQLAlchemy URL to connect to, with the embedded default filled in."""
        return self.database_url or f"sqlite:///{(self.data_dir / 'shoal.db').resolve()}"

    @property
    def vector_store(self) -> VectorStoreConfig:
        """The vector-store sub-config handed to :func:`retrieval.stores.make_store`."""
        return VectorStoreConfig(
            url=self.qdrant_url,
            api_key=self.qdrant_api_key,
            timeout_s=max(self.store_timeout_s, self.store_write_timeout_s),
        )

    @property
    def breaker(self) -> BreakerConfig:
        """The breakers' and store timeouts' sub-config (:mod:`retrieval.resilience`)."""
        return BreakerConfig(
            reset_s=self.breaker_reset_s,
            failure_threshold=self.breaker_failure_threshold,
            failure_rate=self.breaker_failure_rate,
            min_calls=self.breaker_min_calls,
            half_open_probes=self.breaker_half_open_probes,
            store_timeout_s=self.store_timeout_s,
            store_write_timeout_s=self.store_write_timeout_s,
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings for the app, the CLI and workers, read from the environment once."""
    return Settings()
