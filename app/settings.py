"""The one settings object: environment variables with the ``SHOAL_`` prefix.

Nested models use ``__``: ``SHOAL_CHUNKING__OVERLAP_TOKENS=64``. Unset service URLs mean the
embedded default (SQLite, Qdrant Edge, in-process cache and task runner) under ``data_dir``.
Code below :mod:`app` receives its own sub-model and never reads the environment.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

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


class ApiConfig(BaseModel):
    """Where ``shoal serve`` listens (``SHOAL_API__...``)."""

    host: str = Field("127.0.0.1", description="Interface to bind; `0.0.0.0` in containers.")
    port: int = Field(8000, ge=1, le=65535, description="TCP port.")
    max_in_flight: int = Field(
        32,
        ge=1,
        le=4096,
        description=(
            "Requests handled at once per process; more wait in arrival order, holding no "
            "thread. The worker-thread pool gets this many threads plus 8, so a request that "
            "holds SQLite's write lock always finds a thread to finish (app/gateway/in_flight.py)."
        ),
    )


class WorkerConfig(BaseModel):
    """Indexing workers: the in-process runner and `shoal worker` (``SHOAL_WORKERS__...``)."""

    concurrency: int = Field(
        32,
        ge=1,
        le=256,
        description=(
            "Documents indexed at once per process (threads of the in-process runner or of "
            "`shoal worker`). The threads share one model through a batching thread: while it "
            "encodes one batch, the others parse, chunk and write, and queue the next batch. "
            "Short documents need many threads to fill a batch (bench/RESULTS.md)."
        ),
    )
    queue: str = Field(
        "shoal.index",
        # Kombu's Redis transport splits names at ':' and routes such a queue's messages nowhere.
        pattern=r"^[A-Za-z0-9._-]{1,200}$",
        description="Celery queue that indexing tasks go to (letters, digits, `.`, `_`, `-`).",
    )
    max_attempts: int = Field(
        5,
        ge=1,
        le=50,
        description=(
            "Tries of a document before it fails with the reason: retries while the store or "
            "database is unavailable, and starts that never finished (a worker died on it)."
        ),
    )
    visibility_timeout_s: int = Field(
        600,
        ge=5,
        description=(
            "A document in `parsing`/`embedding` for longer than this is taken to belong to a "
            "dead worker and is queued again by the reaper; also the Redis broker's visibility "
            "timeout for unacknowledged tasks. Keep it above the longest indexing of one document."
        ),
    )
    reaper_interval_s: float = Field(
        30.0, gt=0, description="How often each worker looks for stuck documents."
    )
    metrics_port: int = Field(
        9101,
        ge=0,
        le=65535,
        description=(
            "Port on which `shoal worker` serves its Prometheus metrics (documents, stages, "
            "cache, queue depth, GPU); 0 turns it off."
        ),
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


class LimitsConfig(BaseModel):
    """Rate limits (``SHOAL_LIMITS__...``). Tenants' and keys' own quotas are set through the
    admin API; these are the defaults and how limits behave when Redis fails."""

    default_requests_per_minute: int | None = Field(
        None, ge=1, description="Requests per minute of tenants that set none. Unset: no limit."
    )
    default_tokens_per_minute: int | None = Field(
        None,
        ge=1,
        description="Model tokens per minute of tenants that set none. Unset: no limit.",
    )
    redis_failure: Literal["open", "closed"] = Field(
        "open",
        description=(
            "When Redis (`SHOAL_REDIS_URL`) fails: `open` counts each budget locally, divided "
            "by `replicas`, so the platform keeps answering and all replicas together still "
            "spend at most the budget; `closed` refuses requests with a 503 until Redis is back."
        ),
    )
    replicas: int = Field(
        1,
        ge=1,
        le=1024,
        description="API replicas sharing the budgets: the divisor of a fail-open local budget.",
    )
    redis_timeout_s: float = Field(
        0.25, gt=0, le=10, description="Connect and read timeout of each limiter call to Redis."
    )
    cooldown_s: float = Field(
        5.0, ge=0, le=300, description="After a Redis failure, how long limits stay local."
    )
    key_prefix: str = Field("shoal:limit:", description="Prefix of the limiter's Redis keys.")


class ConsoleConfig(BaseModel):
    """The browser console at ``/console`` (``SHOAL_CONSOLE__...``)."""

    enabled: bool = Field(True, description="Serve the console; off: `/console` is a 404.")
    secret: SecretStr | None = Field(
        None,
        min_length=32,
        description=(
            "Key that signs the console's session cookies (32 characters or more). Unset: one "
            "is generated on first start and kept in `<data_dir>/console-secret`. Give every "
            "replica the same value; changing it ends every console session."
        ),
    )
    session_ttl_s: int = Field(
        8 * 3600,
        ge=60,
        le=30 * 24 * 3600,
        description="Lifetime of a console session, in seconds, from sign-in.",
    )


class McpConfig(BaseModel):
    """The MCP door at ``/mcp`` (``SHOAL_MCP__...``): which ``Host`` and ``Origin`` headers it
    answers. The MCP SDK's DNS-rebinding protection refuses any other Host with a ``421`` and
    any other Origin with a ``403``, so that a web page cannot drive a server on a private
    address through a rebound name."""

    allowed_hosts: list[str] = Field(
        ["127.0.0.1:*", "localhost:*", "[::1]:*"],
        description=(
            "Host headers /mcp answers: `name` (no port) or `name:*` (any port), as JSON; "
            'list your public names, e.g. `["shoal.example.com", "shoal.example.com:*"]`. '
            '`["*"]` turns the check off, for a proxy in front that checks Host itself.'
        ),
    )
    allowed_origins: list[str] = Field(
        ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
        description=(
            "Origin headers /mcp accepts (browsers send one; other clients none, which always "
            "passes): `scheme://name` or `scheme://name:*`, as JSON."
        ),
    )


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
