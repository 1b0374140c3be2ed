"""Redis as Shoal's caches, limits and fault registry use it: fail fast, then leave it alone.

Every Redis user here (the embedding and answer caches, the rate limiter, the fault registry)
treats an outage the same way: a client whose timeouts are short and whose own retries are off
(:func:`fail_fast_redis`), and a :class:`Cooldown` that skips Redis for a while after a failure
(:func:`redis_call`), so that an outage costs each caller one short timeout per period.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from retrieval.errors import CacheUnavailableError

_T = TypeVar("_T")


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
