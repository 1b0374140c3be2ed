"""The embedding cache: a text a model has embedded is not embedded by it again.

A key is the tenant, the model id and the sha256 of the normalised text (:func:`cache_key`):
the tenant is explicit, never ambient. One cache serves questions (:func:`embed_query`) and
chunks and quoted sentences (:class:`retrieval.cached_embedder.CachedEmbedder`, which without a
tenant never reaches the cache), so a new version of a document re-embeds only the chunks whose
text changed. Both paths embed the *normalised* text, so a key means one vector whichever path
stored it.

Two :class:`EmbeddingCache` implementations sit side by side: :class:`MemoryCache`, an
in-process LRU (the embedded default), and :class:`RedisCache`, shared by every replica and
worker (``SHOAL_REDIS_URL``). Both keep a vector as its float32 bytes: 4 bytes per dimension,
where a tuple of Python floats took 32.

A cache is an optimisation, never a dependency: :func:`embed_query` and the cached embedder
count any cache failure as a miss and compute (:func:`lookup_quietly`, :func:`store_quietly`),
so a Redis outage slows queries and indexing down but never fails them. :class:`RedisCache`
bounds what an outage costs each call (:mod:`retrieval.redis_client`).
"""

from __future__ import annotations

import hashlib
import threading
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, Self, TypeVar, runtime_checkable

import numpy as np
import numpy.typing as npt
import structlog

from retrieval.config import CacheConfig
from retrieval.embedding import Embedder
from retrieval.redis_client import Cooldown, fail_fast_redis, redis_call

log = structlog.get_logger(__name__)

Vector = npt.NDArray[np.float32]
"""One embedding, shape ``(dimension,)``; those a cache returns are read-only."""
VectorLike = Vector | Sequence[float]
LookupObserver = Callable[[int, int], None]
"""Called with ``(hits, misses)`` after each lookup; ``app`` turns the counts into metrics."""

_T = TypeVar("_T")

# How vectors are stored: little-endian float32, the same bytes on every machine.
_STORED = np.dtype("<f4")


def normalise_query(text: str) -> str:
    """``text`` in NFC with outer whitespace stripped and inner runs collapsed to one space.

    Texts that differ only in these ways share a cache entry, so they must embed identically:
    :func:`embed_query` and :class:`CachedEmbedder` embed this form, never the raw text.
    """
    return " ".join(unicodedata.normalize("NFC", text).split())


def cache_key(scope: str, model_id: str, text: str) -> str:
    """Cache key of ``text`` embedded by ``model_id`` on behalf of ``scope`` (a tenant id):
    the three joined by ``:``, the text as the sha256 of its normalised form.

    The scope is part of every key, so tenants never share an entry: otherwise a tenant could
    time a question to learn whether another tenant's documents (whose chunks and quoted
    sentences are cached too) hold an exact text. The text is normalised first
    (:func:`normalise_query`) and hashed, so keys have a fixed length and never carry the text
    itself into the cache.
    """
    digest = hashlib.sha256(normalise_query(text).encode("utf-8")).hexdigest()
    return f"{scope}:{model_id}:{digest}"


@runtime_checkable
class TenantScoped(Protocol):
    """A component that caches per tenant: :meth:`scoped` is its view for one tenant."""

    def scoped(self, scope: str) -> Self:
        """The same component, its cache entries ``scope``'s own."""
        ...


_C = TypeVar("_C")


def scoped(component: _C, scope: str) -> _C:
    """``component`` as used on behalf of ``scope`` (a tenant id): its :meth:`TenantScoped.scoped`
    view where it caches per tenant, itself where it caches nothing."""
    return component.scoped(scope) if isinstance(component, TenantScoped) else component


class EmbeddingCache(Protocol):
    """Where vectors are kept between calls, under :func:`cache_key` keys.

    Implementations may raise on failure (:class:`~retrieval.errors.CacheUnavailableError`);
    :func:`embed_query` and :class:`CachedEmbedder` count that as a miss.
    """

    def get(self, key: str) -> Vector | None:
        """The vector stored under ``key``, or None."""
        ...

    def put(self, key: str, vector: VectorLike) -> None:
        """Store ``vector`` under ``key``, possibly evicting others."""
        ...

    def get_many(self, keys: Sequence[str]) -> list[Vector | None]:
        """One answer per key, in order: the vector stored under it, or None."""
        ...

    def put_many(self, items: Mapping[str, VectorLike]) -> None:
        """Store each vector under its key, possibly evicting others."""
        ...

    def ping(self) -> None:
        """Check that the cache answers (readiness); an in-process cache always does.

        Raises:
            CacheUnavailableError: it does not.
        """
        ...

    def close(self) -> None:
        """Release connections, if any."""
        ...


def _to_bytes(vector: VectorLike) -> bytes:
    return np.asarray(vector, dtype=_STORED).tobytes()


def _from_bytes(data: bytes) -> Vector | None:
    """The vector ``data`` holds (a read-only view, no copy), or None if it holds none."""
    if len(data) % _STORED.itemsize:
        return None
    return np.frombuffer(data, dtype=_STORED)


class MemoryCache:
    """A thread-safe in-process LRU of at most ``max_entries`` vectors.

    An ``OrderedDict`` of bytes under a lock: no cache library is installed (``cachetools`` is
    not), and this is a dozen lines. A hit or a put makes the entry the most recent; a put
    beyond the limit evicts the least recent. Vectors come back read-only, so no caller can
    change what the cache holds.
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self._max_entries = max_entries
        self._entries: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Vector | None:
        return self.get_many([key])[0]

    def put(self, key: str, vector: VectorLike) -> None:
        self.put_many({key: vector})

    def get_many(self, keys: Sequence[str]) -> list[Vector | None]:
        """The vectors under ``keys`` (None where absent); marks each found one most recent."""
        found: list[bytes | None] = []
        with self._lock:
            for key in keys:
                data = self._entries.get(key)
                if data is not None:
                    self._entries.move_to_end(key)
                found.append(data)
        return [None if data is None else _from_bytes(data) for data in found]

    def put_many(self, items: Mapping[str, VectorLike]) -> None:
        """Store a copy of each vector, evicting the least recent beyond the limit."""
        stored = {key: _to_bytes(vector) for key, vector in items.items()}  # outside the lock
        with self._lock:
            for key, data in stored.items():
                self._entries[key] = data
                self._entries.move_to_end(key)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def ping(self) -> None:
        """In process: always answers."""

    def close(self) -> None:
        """Nothing to release."""


class RedisCache:
    """Vectors in Redis, shared by every API replica and worker.

    A lookup is one ``MGET``; storing is one pipelined ``SET ... EX ttl_s`` per vector (no
    transaction: atomicity buys a cache nothing). Each key is ``key_prefix`` + the cache key.
    Every failure raises :class:`~retrieval.errors.CacheUnavailableError`.

    While Redis is down, no call waits long: connect and read timeouts are short
    (``redis_connect_timeout_s``, ``redis_timeout_s``; redis-py's default is 5 s) and redis-py's
    own retries (ten by default) are off. And after a failure the cache *cools down*: for
    ``cooldown_s`` no call touches Redis, :meth:`get_many` answers all misses and
    :meth:`put_many` drops its vectors. So an outage costs one timeout, and its callers log one
    warning, per cool-down, not per call; the first call after it tries Redis again.
    """

    def __init__(
        self, url: str, config: CacheConfig, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """Configure a client for ``url`` (no connection is made until the first call)."""
        self._client = fail_fast_redis(
            url,
            connect_timeout_s=config.redis_connect_timeout_s,
            timeout_s=config.redis_timeout_s,
        )
        self._prefix = config.key_prefix
        self._ttl_s = config.ttl_s
        self._cooldown = Cooldown(config.cooldown_s, clock=clock)

    @property
    def cooling_down(self) -> bool:
        """Whether a recent failure has the cache skip Redis for now."""
        return self._cooldown.active

    def get(self, key: str) -> Vector | None:
        return self.get_many([key])[0]

    def put(self, key: str, vector: VectorLike) -> None:
        self.put_many({key: vector})

    def get_many(self, keys: Sequence[str]) -> list[Vector | None]:
        """The vectors under ``keys`` (None where absent); all None while cooling down.

        Raises:
            CacheUnavailableError: Redis failed or timed out; the cool-down starts.
        """
        if not keys or self.cooling_down:
            return [None] * len(keys)
        values = self._call(lambda: self._client.mget([self._prefix + key for key in keys]))
        # Bytes or None: responses are not decoded, so a str would not be ours either.
        return [_from_bytes(value) if isinstance(value, bytes) else None for value in values]

    def put_many(self, items: Mapping[str, VectorLike]) -> None:
        """Store each vector for ``ttl_s`` seconds; store nothing while cooling down.

        Raises:
            CacheUnavailableError: Redis failed or timed out; the cool-down starts.
        """
        if not items or self.cooling_down:
            return
        pipeline = self._client.pipeline(transaction=False)
        for key, vector in items.items():
            pipeline.set(self._prefix + key, _to_bytes(vector), ex=self._ttl_s)
        self._call(pipeline.execute)

    def close(self) -> None:
        """Close the client's connections."""
        self._client.close()

    def ping(self) -> None:
        """Ask Redis whether it answers (readiness), cool-down or not.

        Raises:
            CacheUnavailableError: it does not.
        """
        self._call(self._client.ping)

    def _call(self, operation: Callable[[], _T]) -> _T:
        return redis_call(self._cooldown, "embedding cache", operation)


def embed_query(
    embedder: Embedder, cache: EmbeddingCache, text: str, *, scope: str
) -> tuple[list[float], bool]:
    """The embedding of the query ``text`` asked on behalf of ``scope`` (the tenant), from
    ``cache`` when that tenant's entry holds it.

    Returns the vector (unit length, ``embedder.dimension`` floats) and whether it came from the
    cache. On a miss the normalised text is embedded and stored. Any exception from the cache,
    and a cached vector of the wrong length, count as a miss and are logged; they never raise.

    Raises:
        Whatever ``embedder.encode`` raises: without a vector there is no query.
    """
    key = cache_key(scope, embedder.model_id, text)
    [cached] = lookup_quietly(cache, [key])
    if cached is not None:
        if len(cached) == embedder.dimension:
            hit: list[float] = cached.tolist()
            return hit, True
        log.warning("embedding_cache_corrupt", length=len(cached), expected=embedder.dimension)

    vector = embedder.encode([normalise_query(text)])[0]
    store_quietly(cache, {key: vector})
    computed: list[float] = vector.tolist()
    return computed, False


def lookup_quietly(cache: EmbeddingCache, keys: Sequence[str]) -> list[Vector | None]:
    try:
        return cache.get_many(keys)
    except Exception as exc:  # any cache failure degrades to computing, by contract
        log.warning("embedding_cache_failed", operation="get", keys=len(keys), error=repr(exc))
        return [None] * len(keys)


def store_quietly(cache: EmbeddingCache, items: Mapping[str, VectorLike]) -> None:
    try:
        cache.put_many(items)
    except Exception as exc:  # as above: the vectors are computed, the cache is optional
        log.warning("embedding_cache_failed", operation="put", keys=len(items), error=repr(exc))
