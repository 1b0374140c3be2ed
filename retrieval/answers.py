"""The answer cache: what a query can still say while the vector store is unavailable.

Every answer a query produces is stored; one is read back only when the search cannot run
(the store's breaker is open, the store failed or timed out), and is then served marked
degraded. An entry's key (:func:`answer_key`) names the namespace, the namespace's
*generation*, and a hash of everything else that shapes the answer (normalised question,
filter, route, search options, top_k). The generation is a counter per namespace that
:meth:`AnswerCache.invalidate` bumps whenever the namespace's visible documents change
(a version published, a document deleted): entries of earlier generations are never read
again and age out. A query reads the generation *before* it searches, so an answer computed
from the old documents is filed under the old generation even if the change lands mid-query.

Two implementations side by side, as for the embedding cache: :class:`MemoryAnswerCache`
(embedded) and :class:`RedisAnswerCache` (``SHOAL_REDIS_URL``: shared by every replica, and
bumped by the workers that publish). Like the embedding cache it is never a dependency: its
failures raise :class:`~retrieval.errors.CacheUnavailableError`, which callers treat as a miss
(and :func:`invalidate` logs); Redis is then skipped for the cool-down. Should Redis miss a
bump while down, entries it holds stay readable until their TTL: a query that serves one also
checks that the documents it cites are still visible.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

import structlog

from retrieval.config import AnswerCacheConfig, CacheConfig
from retrieval.errors import CacheUnavailableError
from retrieval.redis_client import Cooldown, fail_fast_redis, redis_call

log = structlog.get_logger(__name__)

# A cached answer is JSON: this is a boundary type.
CachedAnswer = dict[str, Any]
_T = TypeVar("_T")


def answer_key(namespace_id: str, generation: int, shape: Mapping[str, Any]) -> str:
    """The key of an answer: namespace, generation and the sha256 of ``shape`` as canonical JSON.

    ``shape`` holds everything else the answer depends on; the caller normalises the question.
    """
    canonical = json.dumps(shape, sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return f"{namespace_id}:{generation}:{digest}"


class AnswerCache(Protocol):
    """Answers by :func:`answer_key`, and each namespace's generation.

    Every method may raise :class:`~retrieval.errors.CacheUnavailableError`.
    """

    def generation(self, namespace_id: str) -> int:
        """The namespace's current generation (0 until first invalidated)."""
        ...

    def invalidate(self, namespace_id: str) -> None:
        """Start a new generation: every answer stored so far for the namespace is gone."""
        ...

    def get(self, key: str) -> CachedAnswer | None:
        """The answer stored under ``key``, or None."""
        ...

    def put(self, key: str, answer: CachedAnswer) -> None:
        """Store ``answer`` under ``key`` for the configured TTL."""
        ...

    def ping(self) -> None:
        """Check that the cache answers; an in-process cache always does."""
        ...

    def close(self) -> None:
        """Release connections, if any."""
        ...


def invalidate(cache: AnswerCache | None, namespace_id: str) -> None:
    """Bump the namespace's generation; a cache failure is logged, never raised."""
    if cache is None:
        return
    try:
        cache.invalidate(namespace_id)
    except CacheUnavailableError as exc:
        log.warning("answer_cache_not_invalidated", namespace_id=namespace_id, error=str(exc))


class MemoryAnswerCache:
    """A thread-safe in-process LRU of at most ``max_entries`` answers, each kept ``ttl_s``."""

    def __init__(
        self, config: AnswerCacheConfig, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._max_entries = config.max_entries
        self._ttl_s = config.ttl_s
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._generations: dict[str, int] = {}
        self._lock = threading.Lock()

    def generation(self, namespace_id: str) -> int:
        with self._lock:
            return self._generations.get(namespace_id, 0)

    def invalidate(self, namespace_id: str) -> None:
        with self._lock:
            # Entries of the old generation are never read again; the LRU evicts them (no
            # scan here: a bulk upload invalidates once per document).
            self._generations[namespace_id] = self._generations.get(namespace_id, 0) + 1

    def get(self, key: str) -> CachedAnswer | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            expires, data = entry
            if self._clock() >= expires:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
        found: CachedAnswer = json.loads(data)
        return found

    def put(self, key: str, answer: CachedAnswer) -> None:
        data = json.dumps(answer)  # a copy: no caller can change what the cache holds
        with self._lock:
            self._entries[key] = (self._clock() + self._ttl_s, data)
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


class RedisAnswerCache:
    """Answers in Redis: ``SET ... EX ttl_s`` of their JSON; generations are ``INCR`` counters.

    Timeouts and cool-down are the embedding cache's (:class:`retrieval.cache.RedisCache`): an
    outage costs one short timeout per cool-down, and while cooling down every call raises
    :class:`CacheUnavailableError` at once (a query cannot file an answer without its
    generation, nor trust one it could not check).
    """

    def __init__(
        self,
        url: str,
        config: AnswerCacheConfig,
        cache: CacheConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = fail_fast_redis(
            url, connect_timeout_s=cache.redis_connect_timeout_s, timeout_s=cache.redis_timeout_s
        )
        self._prefix = config.key_prefix
        self._ttl_s = config.ttl_s
        self._cooldown = Cooldown(cache.cooldown_s, clock=clock)

    def generation(self, namespace_id: str) -> int:
        value = self._call(lambda: self._client.get(f"{self._prefix}generation:{namespace_id}"))
        return int(value) if isinstance(value, bytes) and value.isdigit() else 0

    def invalidate(self, namespace_id: str) -> None:
        self._call(lambda: self._client.incr(f"{self._prefix}generation:{namespace_id}"))

    def get(self, key: str) -> CachedAnswer | None:
        value = self._call(lambda: self._client.get(f"{self._prefix}{key}"))
        if not isinstance(value, bytes):
            return None
        try:
            found = json.loads(value)
        except ValueError:
            return None
        return found if isinstance(found, dict) else None

    def put(self, key: str, answer: CachedAnswer) -> None:
        data = json.dumps(answer)
        self._call(lambda: self._client.set(f"{self._prefix}{key}", data, ex=self._ttl_s))

    def ping(self) -> None:
        """Ask Redis whether it answers, cool-down or not (raises CacheUnavailableError)."""
        redis_call(self._cooldown, "answer cache", self._client.ping)

    def close(self) -> None:
        self._client.close()

    def _call(self, operation: Callable[[], _T]) -> _T:
        if self._cooldown.active:
            raise CacheUnavailableError("Redis answer cache cooling down after a failure")
        return redis_call(self._cooldown, "answer cache", operation)
