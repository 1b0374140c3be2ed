"""The embedding cache: a text a model has embedded is not embedded by it again.

A key is the tenant, the model id and the sha256 of the normalised text (:func:`cache_key`):
the tenant is explicit, never ambient, and a :class:`CachedEmbedder` without one never
reaches the cache. One cache
serves questions (:func:`embed_query`) and chunks (:class:`CachedEmbedder`), so a new version
of a document re-embeds only the chunks whose text changed. Both paths embed the *normalised*
text, so a key means one vector whichever path stored it.

Two :class:`EmbeddingCache` implementations sit side by side: :class:`MemoryCache`, an
in-process LRU (the embedded default), and :class:`RedisCache`, shared by every replica and
worker (``SHOAL_REDIS_URL``). Both keep a vector as its float32 bytes: 4 bytes per dimension,
where a tuple of Python floats took 32.

A cache is an optimisation, never a dependency: :func:`embed_query` and :class:`CachedEmbedder`
count any cache failure as a miss and compute, so a Redis outage slows queries and indexing
down but never fails them. :class:`RedisCache` bounds what an outage costs each call.
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
import redis
import structlog
from redis.backoff import NoBackoff
from redis.retry import Retry

from retrieval.config import CacheConfig
from retrieval.embedding import ChunkEmbedder, Embedder
from retrieval.errors import CacheUnavailableError

log = structlog.get_logger(__name__)

Vector = npt.NDArray[np.float32]
"""One embedding, shape ``(dimension,)``; those a cache returns are read-only."""
VectorLike = Vector | Sequence[float]
LookupObserver = Callable[[int, int], None]
"""Called with ``(hits, misses)`` after each lookup; ``app`` turns the counts into metrics."""

# How vectors are stored: little-endian float32, the same bytes on every machine.
_STORED = np.dtype("<f4")
_T = TypeVar("_T")


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


class Cooldown:
    """After a failure a dependency is left alone for ``seconds``: an outage costs its callers
    one timeout per period, not one per call. One float, written whole: no lock needed."""

    def __init__(self, seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._until = float("-inf")

    @property
    def active(self) -> bool:
        return self._clock() < self._until

    @property
    def remaining_s(self) -> float:
        return max(0.0, self._until - self._clock())

    def start(self) -> None:
        self._until = self._clock() + self.seconds


def redis_call(cooldown: Cooldown, what: str, operation: Callable[[], _T]) -> _T:
    """``operation()``; a Redis failure starts ``cooldown`` and raises
    :class:`~retrieval.errors.CacheUnavailableError` naming ``what``."""
    try:
        return operation()
    except (redis.RedisError, OSError) as exc:
        cooldown.start()
        raise CacheUnavailableError(
            f"Redis {what} failed ({type(exc).__name__}: {exc}); skipped for {cooldown.seconds} s"
        ) from exc


def fail_fast_redis(url: str, *, connect_timeout_s: float, timeout_s: float) -> redis.Redis:
    """A client for ``url`` that gives up within its timeouts: short connect and read timeouts
    (redis-py's default is 5 s) and redis-py's own retries (ten by default) off, so that an
    outage costs each caller one short timeout. No connection is made until the first call."""
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=connect_timeout_s,
        socket_timeout=timeout_s,
        retry=Retry(NoBackoff(), retries=0),
    )


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
    [cached] = _lookup(cache, [key])
    if cached is not None:
        if len(cached) == embedder.dimension:
            hit: list[float] = cached.tolist()
            return hit, True
        log.warning("embedding_cache_corrupt", length=len(cached), expected=embedder.dimension)

    vector = embedder.encode([normalise_query(text)])[0]
    _store(cache, {key: vector})
    computed: list[float] = vector.tolist()
    return computed, False


class CachedEmbedder:
    """An embedder that looks texts up in a cache and encodes only the ones it misses.

    It wraps a :class:`~retrieval.embedding.ChunkEmbedder` and has the same interface, so
    indexing uses it in place of the model: a new version of a document re-embeds only the
    chunks whose text changed. Thread-safe if the wrapped embedder and the cache are.

    Its entries are one tenant's: :meth:`scoped` gives the view that reads and writes them.
    Without a scope (as built) it never reaches the cache and only normalises and encodes, so
    a call path that forgets the tenant costs time, never another tenant's entries.

    Like :func:`embed_query`, it embeds each text's normalised form, because the key hashes
    that form: were the raw text embedded, one key could hold two vectors. For
    all-MiniLM-L6-v2 this changes nothing (its BERT tokenizer splits on whitespace and folds
    accents, so both forms give the same tokens and the same vector); for other models a chunk
    loses only runs of whitespace and Unicode decomposition.
    """

    def __init__(
        self,
        embedder: ChunkEmbedder,
        cache: EmbeddingCache,
        *,
        on_lookup: LookupObserver | None = None,
        scope: str | None = None,
    ) -> None:
        """``on_lookup(hits, misses)`` is called after each lookup, one count per text."""
        self._embedder = embedder
        self._cache = cache
        self._on_lookup = on_lookup
        self._scope = scope

    def scoped(self, scope: str) -> Self:
        """This embedder on behalf of ``scope`` (a tenant id): a view over the same model and
        cache whose entries are ``scope``'s alone."""
        return type(self)(self._embedder, self._cache, on_lookup=self._on_lookup, scope=scope)

    @property
    def scope(self) -> str | None:
        """Whose entries this view reads and writes; None: it never reaches the cache."""
        return self._scope

    @property
    def inner(self) -> ChunkEmbedder:
        """The wrapped embedder."""
        return self._embedder

    @property
    def model_id(self) -> str:
        return self._embedder.model_id

    @property
    def dimension(self) -> int:
        return self._embedder.dimension

    @property
    def max_seq_length(self) -> int:
        return self._embedder.max_seq_length

    def count_tokens(self, text: str) -> int:
        return self._embedder.count_tokens(text)

    def encode(self, texts: Sequence[str], *, token_counts: Sequence[int] | None = None) -> Vector:
        """Embed ``texts`` as the wrapped embedder does: one unit-length float32 row per text,
        in input order, shape ``(len(texts), dimension)``.

        All texts are looked up in one batch; the misses are encoded in one call (a text
        repeated within the call once) and stored. A cache failure counts every text as a
        miss and is logged, never raised; so is a cached vector of the wrong length.

        Raises:
            ValueError: ``token_counts`` has not one count per text.
            Whatever the wrapped ``encode`` raises (e.g. ``ValueError`` for a text too long).
        """
        if token_counts is not None and len(token_counts) != len(texts):
            raise ValueError("token_counts must have one count per text")
        dimension = self._embedder.dimension
        rows = np.empty((len(texts), dimension), dtype=np.float32)
        if not texts:
            return rows
        normalised = [normalise_query(text) for text in texts]
        if self._scope is None:
            return self._embedder.encode(
                normalised,
                token_counts=self._recount(texts, normalised, token_counts, range(len(texts))),
            )
        keys = [cache_key(self._scope, self.model_id, text) for text in normalised]
        missed: dict[str, list[int]] = {}  # key -> the rows that need its vector
        corrupt = 0
        for row, (key, vector) in enumerate(zip(keys, _lookup(self._cache, keys), strict=True)):
            if vector is not None and vector.shape == (dimension,):
                rows[row] = vector
            else:
                if vector is not None:
                    corrupt += 1
                missed.setdefault(key, []).append(row)
        if corrupt:
            log.warning("embedding_cache_corrupt", count=corrupt, expected=dimension)
        misses = sum(len(indices) for indices in missed.values())
        if self._on_lookup is not None:
            self._on_lookup(len(texts) - misses, misses)
        if not missed:
            return rows

        firsts = [indices[0] for indices in missed.values()]
        counts = self._recount(texts, normalised, token_counts, firsts)
        vectors = self._embedder.encode([normalised[i] for i in firsts], token_counts=counts)
        for indices, vector in zip(missed.values(), vectors, strict=True):
            rows[indices] = vector
        _store(self._cache, dict(zip(missed, vectors, strict=True)))
        return rows

    def _recount(
        self,
        texts: Sequence[str],
        normalised: Sequence[str],
        token_counts: Sequence[int] | None,
        rows: Sequence[int],
    ) -> list[int] | None:
        """The token counts of ``rows``' normalised texts: chunking counted the raw text, so
        only the rows that normalising changed are counted again."""
        if token_counts is None:
            return None
        return [
            token_counts[i]
            if normalised[i] == texts[i]
            else self._embedder.count_tokens(normalised[i])
            for i in rows
        ]


def _lookup(cache: EmbeddingCache, keys: Sequence[str]) -> list[Vector | None]:
    try:
        return cache.get_many(keys)
    except Exception as exc:  # any cache failure degrades to computing, by contract
        log.warning("embedding_cache_failed", operation="get", keys=len(keys), error=repr(exc))
        return [None] * len(keys)


def _store(cache: EmbeddingCache, items: Mapping[str, VectorLike]) -> None:
    try:
        cache.put_many(items)
    except Exception as exc:  # as above: the vectors are computed, the cache is optional
        log.warning("embedding_cache_failed", operation="put", keys=len(items), error=repr(exc))
