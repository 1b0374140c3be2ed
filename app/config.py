"""The app's own settings sections, each a ``SHOAL_<SECTION>__...`` group: the API server, the
indexing workers, rate limits, the console and the MCP door. :mod:`app.settings` composes them
with the packages' config models (:mod:`ingestion.config`, :mod:`retrieval.config`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, SecretStr


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
