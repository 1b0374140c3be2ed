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
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from app.errors import RateLimitedError
from app.metrics import RATE_LIMITED
from app.services.limiters import Charge, Decision, Limiter
from app.services.usage import UsageLedger

log = structlog.get_logger(__name__)

REQUESTS = "requests_per_minute"
TOKENS = "tokens_per_minute"
QUOTA_NAMES = (REQUESTS, TOKENS)


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
        limiter: Limiter,
        *,
        default_requests_per_minute: int | None = None,
        default_tokens_per_minute: int | None = None,
        rejections: UsageLedger | None = None,
    ) -> None:
        """``rejections``: where each refused request is counted for its tenant and key (the
        usage rows' ``rejected``); None counts them in the metrics only."""
        self.limiter = limiter
        self._rejections = rejections
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
        return self._draw(quotas, charges, REQUESTS, 1)

    def reserve(self, quotas: Quotas, tokens: int) -> tuple[Reservation | None, Decision | None]:
        """Reserve ``tokens`` against the caller's token budgets before generating.

        Raises:
            RateLimitedError: not enough budget now (429 with the wait), or ever.
            LimiterUnavailableError: Redis is down and limits fail closed (503).
        """
        charges = quotas.charges(TOKENS, tokens)
        if not charges or tokens <= 0:
            return None, None
        decision = self._draw(quotas, charges, TOKENS, tokens)
        return Reservation(charges, decision.engine, tokens), decision

    def settle(self, reservation: Reservation | None, used: int) -> None:
        """Give back what the request reserved and did not use, or charge what it used beyond."""
        if reservation is None or used == reservation.tokens:
            return
        delta = used - reservation.tokens
        charges = [Charge(c.bucket, c.limit, delta) for c in reservation.charges]
        self.limiter.give(charges, engine=reservation.engine)

    def _draw(self, quotas: Quotas, charges: list[Charge], quota: str, cost: int) -> Decision:
        for charge in charges:
            if cost > charge.limit:
                owner = charge.bucket.split(":", 1)[0]
                self._rejected(quotas, owner, quota)
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
            self._rejected(quotas, owner, quota)
            unit = "requests" if quota == REQUESTS else "tokens"
            raise RateLimitedError(
                f"the {owner}'s {quota} quota of {tight.limit} is spent: this request needs "
                f"{cost} {unit}, {max(0, math.floor(tight.remaining))} are left; retry in "
                f"{math.ceil(decision.retry_after_s)} s",
                retry_after_s=decision.retry_after_s,
                decision=decision,
            )
        return decision

    def _rejected(self, quotas: Quotas, owner: str, quota: str) -> None:
        RATE_LIMITED.labels(owner, quota).inc()
        if self._rejections is not None:
            self._rejections.reject(tenant_id=quotas.tenant_id, key_id=quotas.key_id)

    def close(self) -> None:
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
