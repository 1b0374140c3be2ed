"""The rate limiters: token buckets drawn from atomically, in process or in Redis.

The algorithm and the reasons behind it are :mod:`app.services.limits`'s docstring; this module
holds the engines it describes: :class:`LocalLimiter`, :class:`RedisLimiter` (one Lua script
per draw, Redis's own clock) and :class:`FailoverLimiter` (Redis, with a local share of each
budget or a refusal while Redis is down).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import redis
import structlog

from app.errors import LimiterUnavailableError
from app.metrics import RATE_LIMIT_BACKEND, RATE_LIMIT_FALLBACKS
from retrieval.redis_client import Cooldown, fail_fast_redis

log = structlog.get_logger(__name__)

WINDOW_S = 60.0
FailureMode = Literal["open", "closed"]


@dataclass(frozen=True)
class Charge:
    """An amount to draw from one bucket (negative: give back)."""

    bucket: str  # e.g. "tenant:<id>:tokens_per_minute"
    limit: int  # the bucket's capacity: the budget per minute
    cost: float


@dataclass(frozen=True)
class BucketState:
    bucket: str
    limit: int
    remaining: float  # after the draw (before it, if the draw was refused)

    @property
    def reset_s(self) -> float:
        """Seconds until the bucket is full again."""
        return max(0.0, (self.limit - self.remaining) * WINDOW_S / self.limit)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after_s: float  # 0 when allowed
    buckets: tuple[BucketState, ...]
    engine: str  # which limiter decided: "local" or "redis"

    @property
    def tightest(self) -> BucketState | None:
        """The bucket with the smallest share left: the one the headers describe."""
        return min(self.buckets, key=lambda b: b.remaining / b.limit, default=None)


class Limiter(Protocol):
    """What :class:`~app.services.limits.RateLimits` draws from: a :class:`LocalLimiter`, or a
    :class:`FailoverLimiter` in front of Redis."""

    name: str

    def draw(self, charges: Sequence[Charge]) -> Decision:
        """Take every charge's cost from its bucket, or none if any bucket lacks it."""
        ...

    def give(self, charges: Sequence[Charge], *, engine: str) -> None:
        """Adjust buckets unconditionally: a negative cost refunds (up to the capacity), a
        positive one charges, possibly into debt. ``engine`` is the one that made the
        reservation (:attr:`Decision.engine`)."""
        ...

    def close(self) -> None:
        """Release connections, if any."""
        ...


class LocalLimiter:
    """Token buckets in this process. ``share`` scales every limit (``1/replicas`` when it
    stands in for a shared limiter)."""

    name = "local"

    def __init__(self, *, share: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._share = share
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # bucket -> (spent, at)

    def _limit(self, charge: Charge) -> float:
        return max(1.0, charge.limit * self._share)

    def _level(self, charge: Charge, now: float) -> float:
        limit = self._limit(charge)
        spent, at = self._buckets.get(charge.bucket, (0.0, now))
        return limit - max(0.0, spent - (now - at) * limit / WINDOW_S)

    def _store(self, charge: Charge, level: float, now: float) -> None:
        self._buckets[charge.bucket] = (self._limit(charge) - level, now)

    def draw(self, charges: Sequence[Charge]) -> Decision:
        with self._lock:
            now = self._clock()
            levels = [self._level(c, now) for c in charges]
            # A cost above a shared budget's local share (``share`` < 1) could never fit: it
            # waits for a full bucket instead, and its debt makes later requests wait.
            wait = _wait_s(
                [
                    (self._limit(c), min(c.cost, self._limit(c)), lv)
                    for c, lv in zip(charges, levels, strict=True)
                ]
            )
            allowed = wait == 0
            if allowed:
                levels = [lv - c.cost for c, lv in zip(charges, levels, strict=True)]
                for c, lv in zip(charges, levels, strict=True):
                    self._store(c, lv, now)
                self._forget_full(now)
        states = tuple(
            BucketState(c.bucket, int(self._limit(c)), lv)
            for c, lv in zip(charges, levels, strict=True)
        )
        return Decision(allowed, wait, states, self.name)

    def give(self, charges: Sequence[Charge], *, engine: str = "local") -> None:
        """Adjust the buckets (``engine``: always this one, the only one in play)."""
        with self._lock:
            now = self._clock()
            for c in charges:
                self._store(c, min(self._limit(c), self._level(c, now) - c.cost), now)

    def close(self) -> None:
        """Nothing to release."""

    def _forget_full(self, now: float) -> None:
        # A bucket idle for a whole window is full again: its entry says nothing a missing
        # one would not. Sweep now and then so that memory follows the active callers only.
        if len(self._buckets) < 10_000:
            return
        stale = [b for b, (_, at) in self._buckets.items() if now - at > WINDOW_S * 2]
        for bucket in stale:
            del self._buckets[bucket]


def _wait_s(buckets: Sequence[tuple[float, float, float]]) -> float:
    """Seconds until every (limit, cost, level) bucket holds its cost; 0 if they all do now."""
    wait = 0.0
    for limit, cost, level in buckets:
        if level < cost:
            wait = max(wait, (cost - level) * WINDOW_S / limit)
    return wait


# KEYS: the buckets. ARGV: limit and cost of each, in order, then "draw" or "give".
# Returns {allowed (0/1), wait seconds, level of each bucket...}; numbers as strings, since
# Redis turns Lua numbers into integers. TIME is Redis's clock: one for every replica.
_DRAW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local n = #KEYS
local levels, wait = {}, 0
for i = 1, n do
  local limit, cost = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local state = redis.call('HMGET', KEYS[i], 'spent', 'at')
  local level = limit
  if state[1] then
    level = limit - math.max(0, tonumber(state[1]) - (now - tonumber(state[2])) * limit / 60)
  end
  levels[i] = level
  if level < cost then wait = math.max(wait, (cost - level) * 60 / limit) end
end
local give = ARGV[2 * n + 1] == 'give'
if wait == 0 or give then
  for i = 1, n do
    local limit, cost = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
    levels[i] = math.min(limit, levels[i] - cost)
    redis.call('HSET', KEYS[i], 'spent', tostring(limit - levels[i]), 'at', tostring(now))
    -- Expire when full again (plus a minute): a missing bucket reads as full.
    local full_ms = math.max(0, (limit - levels[i]) * 60000 / limit)
    redis.call('PEXPIRE', KEYS[i], math.ceil(full_ms) + 60000)
  end
end
local out = {wait == 0 and 1 or 0, tostring(wait)}
for i = 1, n do out[#out + 1] = tostring(levels[i]) end
return out
"""


class RedisLimiter:
    """Token buckets in Redis, shared by every replica; each draw is one atomic script.

    Raises :class:`redis.RedisError` on failure: :class:`FailoverLimiter` decides what then.
    """

    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        key_prefix: str = "shoal:limit:",
        timeout_s: float = 0.25,
    ) -> None:
        self._client = fail_fast_redis(url, connect_timeout_s=timeout_s, timeout_s=timeout_s)
        self._script = self._client.register_script(_DRAW)
        self._prefix = key_prefix

    def _run(self, charges: Sequence[Charge], mode: str) -> list[Any]:
        keys = [self._prefix + c.bucket for c in charges]
        args: list[Any] = [x for c in charges for x in (c.limit, repr(float(c.cost)))]
        result: list[Any] = self._script(keys=keys, args=[*args, mode])
        return result

    def draw(self, charges: Sequence[Charge]) -> Decision:
        allowed, wait, *levels = self._run(charges, "draw")
        states = tuple(
            BucketState(c.bucket, c.limit, float(lv)) for c, lv in zip(charges, levels, strict=True)
        )
        return Decision(
            int(allowed) == 1, float(wait) if not int(allowed) else 0.0, states, "redis"
        )

    def give(self, charges: Sequence[Charge]) -> None:
        self._run(charges, "give")

    def close(self) -> None:
        self._client.close()


class FailoverLimiter:
    """:class:`RedisLimiter` with a policy for when Redis fails (module docstring).

    After a failure Redis is left alone for ``cooldown_s``; the first draw after that tries it
    again. A request larger than a replica's local share passes only when that share is full,
    and its debt then holds the following ones back: the replicas together overspend by at
    most one request each per minute of outage.
    """

    name = "redis"

    def __init__(
        self,
        shared: RedisLimiter,
        *,
        mode: FailureMode,
        replicas: int,
        cooldown_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.shared = shared
        self.mode = mode
        self.local = LocalLimiter(share=1 / replicas, clock=clock)
        self._cooldown = Cooldown(cooldown_s, clock=clock)
        RATE_LIMIT_BACKEND.labels("redis").set(1)
        RATE_LIMIT_BACKEND.labels("local").set(0)

    def _fallback(self, exc: Exception) -> None:
        if not self._cooldown.active:
            log.warning("rate_limiter_redis_failed", error=str(exc), mode=self.mode)
        self._cooldown.start()
        RATE_LIMIT_BACKEND.labels("redis").set(0)
        RATE_LIMIT_BACKEND.labels("local").set(1 if self.mode == "open" else 0)

    def draw(self, charges: Sequence[Charge]) -> Decision:
        if not self._cooldown.active:
            try:
                decision = self.shared.draw(charges)
            except redis.RedisError as exc:
                self._fallback(exc)
            else:
                RATE_LIMIT_BACKEND.labels("redis").set(1)
                RATE_LIMIT_BACKEND.labels("local").set(0)
                return decision
        RATE_LIMIT_FALLBACKS.labels(self.mode).inc()
        if self.mode == "closed":
            retry = max(1.0, self._cooldown.remaining_s)
            raise LimiterUnavailableError(
                "the shared rate limiter is unavailable and this deployment fails closed",
                retry_after_s=retry,
            )
        return self.local.draw(charges)

    def give(self, charges: Sequence[Charge], *, engine: str = "redis") -> None:
        """Settle with the limiter that made the reservation. While Redis is unavailable,
        charges beyond a reservation go to the local share (the spend must count somewhere);
        refunds are dropped (the budget is then under-spent, never over-spent)."""
        if engine == "redis" and not self._cooldown.active:
            try:
                self.shared.give(charges)
                return
            except redis.RedisError as exc:
                self._fallback(exc)
        if engine == "local":
            self.local.give(charges)
        elif extra := [c for c in charges if c.cost > 0]:
            self.local.give(extra)

    def close(self) -> None:
        self.shared.close()
