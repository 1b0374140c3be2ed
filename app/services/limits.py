"""Rate limits: requests and tokens per minute, per tenant and per key.

Each quota is a token bucket that holds at most one minute's budget and refills continuously
(``limit / 60`` per second). A bucket records what was spent and not yet refilled, not what is
left, so a changed quota applies at once: raised, the spent part stays spent and the rest is
available; lowered below what was spent, the caller waits out the difference.

A request draws from every bucket that applies to it *in one atomic step*: from all of them,
or, if any lacks the amount, from none. So a key's and its
tenant's budgets can never disagree, and N concurrent requests can never spend more than the
budget, since each one's tokens are taken before its work starts.

Tokens are *reserved* before generation (question + packed context + the route's maximum
output, counted with tiktoken) and *settled* afterwards with the real usage: the unused part
goes back to the buckets, and usage beyond the reservation (a fallback route with a larger
budget) is charged, even into debt, which the next requests then wait out.

When a bucket lacks the amount, the wait until it refills enough is exact
(``missing / rate``): the ``Retry-After`` of the 429. A request that needs more than a whole
minute's budget could never pass; it is refused at once with no ``Retry-After``.

Two engines, one algorithm:

- :class:`LocalLimiter`: in process, under a lock (the embedded mode).
- :class:`RedisLimiter`: one Lua script per draw, run atomically by Redis with Redis's own clock,
  so every API replica shares one budget (the distributed mode).

:class:`FailoverLimiter` wraps Redis: when Redis fails, either every replica falls back to a
local limiter holding ``1/replicas`` of each budget (``fail-open``, the default: the platform
keeps answering and the replicas together still spend at most the budget), or requests are
refused with a 503 (``fail-closed``, for deployments where no spend may escape the shared
count). A cool-down keeps an outage from costing a Redis timeout per request.

No library does this: ``limits`` (moving and sliding windows) can neither take a cost from
several limits atomically nor give back an unused reservation.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import redis
import structlog

from app.errors import LimiterUnavailableError, RateLimitedError
from app.metrics import RATE_LIMIT_BACKEND, RATE_LIMIT_FALLBACKS, RATE_LIMITED
from retrieval.redis_client import Cooldown, fail_fast_redis

log = structlog.get_logger(__name__)

REQUESTS = "requests_per_minute"
TOKENS = "tokens_per_minute"
QUOTA_NAMES = (REQUESTS, TOKENS)
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
    name: str

    def draw(self, charges: Sequence[Charge]) -> Decision:
        """Take every charge's cost from its bucket, or none if any bucket lacks it."""
        ...

    def give(self, charges: Sequence[Charge]) -> None:
        """Adjust buckets unconditionally: a negative cost refunds (up to the capacity), a
        positive one charges, possibly into debt."""
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

    def give(self, charges: Sequence[Charge]) -> None:
        with self._lock:
            now = self._clock()
            for c in charges:
                self._store(c, min(self._limit(c), self._level(c, now) - c.cost), now)

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


@dataclass(frozen=True)
class Quotas:
    """Per-minute budgets that apply to one caller: its key's and its tenant's."""

    tenant_id: str
    key_id: str
    tenant: Mapping[str, int | None] = field(default_factory=dict)
    key: Mapping[str, int | None] = field(default_factory=dict)

    def charges(self, quota: str, cost: float) -> list[Charge]:
        found = []
        for owner, ident, limits in (
            ("tenant", self.tenant_id, self.tenant),
            ("key", self.key_id, self.key),
        ):
            limit = limits.get(quota)
            if limit:
                found.append(Charge(f"{owner}:{ident}:{quota}", int(limit), cost))
        return found


@dataclass
class Reservation:
    """Tokens drawn for one request, to settle with what it really used."""

    charges: list[Charge]
    engine: str
    tokens: int


class RateLimits:
    """The platform's limits: requests on every tenant request, tokens around generation."""

    def __init__(
        self,
        limiter: LocalLimiter | FailoverLimiter,
        *,
        default_requests_per_minute: int | None = None,
        default_tokens_per_minute: int | None = None,
    ) -> None:
        self.limiter = limiter
        self._defaults = {
            REQUESTS: default_requests_per_minute,
            TOKENS: default_tokens_per_minute,
        }

    def quotas(
        self,
        *,
        tenant_id: str,
        key_id: str,
        tenant: Mapping[str, Any],
        key: Mapping[str, Any],
    ) -> Quotas:
        """A caller's budgets: the tenant's own quotas, else the server's defaults; the key's."""
        own = {name: tenant.get(name) or self._defaults[name] for name in QUOTA_NAMES}
        return Quotas(tenant_id, key_id, own, {n: key.get(n) for n in QUOTA_NAMES})

    def admit(self, quotas: Quotas) -> Decision | None:
        """Count one request against the caller's request budgets.

        Returns the decision (for the ``RateLimit-*`` headers), None if no budget applies.

        Raises:
            RateLimitedError: a budget is spent (429).
            LimiterUnavailableError: Redis is down and limits fail closed (503).
        """
        charges = quotas.charges(REQUESTS, 1)
        if not charges:
            return None
        return self._draw(charges, REQUESTS, 1)

    def reserve(self, quotas: Quotas, tokens: int) -> tuple[Reservation | None, Decision | None]:
        """Reserve ``tokens`` against the caller's token budgets before generating.

        Raises:
            RateLimitedError: not enough budget now (429 with the wait), or ever.
            LimiterUnavailableError: Redis is down and limits fail closed (503).
        """
        charges = quotas.charges(TOKENS, tokens)
        if not charges or tokens <= 0:
            return None, None
        decision = self._draw(charges, TOKENS, tokens)
        return Reservation(charges, decision.engine, tokens), decision

    def settle(self, reservation: Reservation | None, used: int) -> None:
        """Give back what the request reserved and did not use, or charge what it used beyond."""
        if reservation is None or used == reservation.tokens:
            return
        delta = used - reservation.tokens
        charges = [Charge(c.bucket, c.limit, delta) for c in reservation.charges]
        if isinstance(self.limiter, FailoverLimiter):
            self.limiter.give(charges, engine=reservation.engine)
        else:
            self.limiter.give(charges)

    def _draw(self, charges: list[Charge], quota: str, cost: int) -> Decision:
        for charge in charges:
            if cost > charge.limit:
                owner = charge.bucket.split(":", 1)[0]
                RATE_LIMITED.labels(owner, quota).inc()
                raise RateLimitedError(
                    f"this request needs {cost} tokens, more than the {owner}'s whole "
                    f"{quota} quota of {charge.limit}: ask for fewer passages (top_k) or a "
                    "larger quota",
                    retry_after_s=None,
                    decision=None,
                )
        decision = self.limiter.draw(charges)
        if not decision.allowed:
            tight = min(decision.buckets, key=lambda b: b.remaining - cost)
            owner = tight.bucket.split(":", 1)[0]
            RATE_LIMITED.labels(owner, quota).inc()
            unit = "requests" if quota == REQUESTS else "tokens"
            raise RateLimitedError(
                f"the {owner}'s {quota} quota of {tight.limit} is spent: this request needs "
                f"{cost} {unit}, {max(0, math.floor(tight.remaining))} are left; retry in "
                f"{math.ceil(decision.retry_after_s)} s",
                retry_after_s=decision.retry_after_s,
                decision=decision,
            )
        return decision

    def close(self) -> None:
        if isinstance(self.limiter, FailoverLimiter):
            self.limiter.close()


def rate_limit_headers(decision: Decision) -> dict[str, str]:
    """``RateLimit-Limit``/``-Remaining``/``-Reset`` of the tightest bucket of ``decision``."""
    tight = decision.tightest
    if tight is None:
        return {}
    return {
        "RateLimit-Limit": str(tight.limit),
        "RateLimit-Remaining": str(max(0, math.floor(tight.remaining))),
        "RateLimit-Reset": str(math.ceil(tight.reset_s)),
    }
