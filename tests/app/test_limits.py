"""Token-bucket limits: the in-process limiter and the Redis one behave alike (exact waits,
all-or-nothing draws across buckets, refunds, debt), concurrent draws never overspend, and
a Redis failure falls back to a local share of the budget or refuses, as configured."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from app.errors import LimiterUnavailableError, RateLimitedError
from app.metrics import RATE_LIMIT_BACKEND, RATE_LIMIT_FALLBACKS
from app.services.limiters import Charge, FailoverLimiter, LocalLimiter, RedisLimiter
from app.services.limits import Quotas, RateLimits, rate_limit_headers
from tests.conftest import RedisScratch, free_port


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["local", "redis"])
def limiter(
    request: pytest.FixtureRequest, redis_scratch: RedisScratch
) -> Iterator[LocalLimiter | RedisLimiter]:
    """Both engines. Redis keeps its own clock (TIME), so waits there are checked with slack."""
    if request.param == "local":
        yield LocalLimiter()
        return
    shared = RedisLimiter(redis_scratch.url, key_prefix=redis_scratch.prefix)
    yield shared
    shared.close()


def test_a_bucket_holds_a_minute_of_budget_and_refuses_past_it(
    limiter: LocalLimiter | RedisLimiter,
) -> None:
    charge = [Charge("tenant:t:requests_per_minute", 3, 1)]
    decisions = [limiter.draw(charge) for _ in range(4)]

    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [round(d.buckets[0].remaining) for d in decisions] == [2, 1, 0, 0]
    # 3 per minute refill one every 20 s: the wait is computed, not a constant.
    assert 19 < decisions[3].retry_after_s <= 20
    assert decisions[0].retry_after_s == 0


def test_the_wait_is_for_the_missing_amount(limiter: LocalLimiter | RedisLimiter) -> None:
    bucket = "tenant:t:tokens_per_minute"
    assert limiter.draw([Charge(bucket, 600, 550)]).allowed
    refused = limiter.draw([Charge(bucket, 600, 200)])

    # 50 left, 150 missing at 10 tokens per second: 15 s.
    assert not refused.allowed
    assert 14.5 < refused.retry_after_s <= 15


def test_a_draw_takes_from_every_bucket_or_from_none(limiter: LocalLimiter | RedisLimiter) -> None:
    key, tenant = "key:k:tokens_per_minute", "tenant:t:tokens_per_minute"
    assert limiter.draw([Charge(key, 100, 90)]).allowed  # the key is nearly spent

    refused = limiter.draw([Charge(tenant, 1000, 50), Charge(key, 100, 50)])
    assert not refused.allowed
    # The tenant's bucket was not touched by the refused draw: all 1000 are still there.
    tenant_alone = limiter.draw([Charge(tenant, 1000, 1000)])
    assert tenant_alone.allowed


def test_giving_back_refunds_up_to_the_capacity_and_charging_runs_into_debt(
    limiter: LocalLimiter | RedisLimiter,
) -> None:
    bucket = "tenant:t:tokens_per_minute"
    assert limiter.draw([Charge(bucket, 1000, 800)]).allowed
    limiter.give([Charge(bucket, 1000, -5000)])  # a refund larger than what was taken
    assert limiter.draw([Charge(bucket, 1000, 1000)]).allowed  # full, and no more than full
    assert not limiter.draw([Charge(bucket, 1000, 20)]).allowed

    limiter.give([Charge(bucket, 1000, 500)])  # used 500 beyond its reservation: debt
    refused = limiter.draw([Charge(bucket, 1000, 1)])
    assert not refused.allowed
    assert refused.buckets[0].remaining < -490
    assert refused.retry_after_s > 29  # the debt (500 tokens) is 30 s of refill


def test_concurrent_draws_never_spend_more_than_the_budget(
    limiter: LocalLimiter | RedisLimiter,
) -> None:
    charges = [Charge("tenant:t:tokens_per_minute", 1000, 70), Charge("key:k:tokens", 800, 70)]
    start = threading.Barrier(24)

    def draw(_: int) -> bool:
        start.wait()
        return limiter.draw(charges).allowed

    with ThreadPoolExecutor(24) as pool:
        allowed = sum(pool.map(draw, range(24)))

    # The key's 800 hold 11 draws of 70 (plus what refills while they run: under one token).
    assert allowed == 11


def test_buckets_refill_continuously(clock: Clock) -> None:
    limiter = LocalLimiter(clock=clock)
    charge = [Charge("tenant:t:requests_per_minute", 60, 60)]
    assert limiter.draw(charge).allowed
    clock.now += 30
    half = limiter.draw([Charge("tenant:t:requests_per_minute", 60, 31)])
    assert not half.allowed
    assert half.retry_after_s == pytest.approx(1.0)
    clock.now += 1
    assert limiter.draw([Charge("tenant:t:requests_per_minute", 60, 31)]).allowed


def test_headers_describe_the_bucket_with_the_smallest_share_left() -> None:
    limiter = LocalLimiter()
    decision = limiter.draw(
        [Charge("tenant:t:requests_per_minute", 100, 10), Charge("key:k:requests", 10, 5)]
    )
    assert rate_limit_headers(decision) == {
        "RateLimit-Limit": "10",
        "RateLimit-Remaining": "5",
        "RateLimit-Reset": "30",  # 5 of 10 per minute missing
    }


def quotas(tenant_tpm: int | None = None, key_tpm: int | None = None) -> Quotas:
    return Quotas("t", "k", {"tokens_per_minute": tenant_tpm}, {"tokens_per_minute": key_tpm})


def test_a_reservation_is_settled_with_the_real_usage() -> None:
    limits = RateLimits(LocalLimiter())
    reservation, _ = limits.reserve(quotas(tenant_tpm=1000), 600)
    assert reservation is not None
    with pytest.raises(RateLimitedError):
        limits.reserve(quotas(tenant_tpm=1000), 600)  # 400 left

    limits.settle(reservation, 150)  # 450 of the 600 come back

    again, decision = limits.reserve(quotas(tenant_tpm=1000), 800)
    assert again is not None
    assert decision is not None
    assert decision.buckets[0].remaining == pytest.approx(50, abs=1)


def test_a_request_larger_than_a_whole_budget_is_refused_without_a_wait() -> None:
    limits = RateLimits(LocalLimiter())
    with pytest.raises(RateLimitedError) as refused:
        limits.reserve(quotas(tenant_tpm=5000, key_tpm=300), 400)
    assert refused.value.retry_after_s is None
    assert "key's whole tokens_per_minute quota of 300" in str(refused.value)


def test_no_quota_means_no_limit_and_defaults_apply_to_tenants_without_one() -> None:
    limits = RateLimits(LocalLimiter(), default_requests_per_minute=2)
    unlimited = RateLimits(LocalLimiter())
    caller = limits.quotas(tenant_id="t", key_id="k", tenant={}, key={})
    own = limits.quotas(tenant_id="t2", key_id="k2", tenant={"requests_per_minute": 5}, key={})

    assert unlimited.admit(unlimited.quotas(tenant_id="t", key_id="k", tenant={}, key={})) is None
    limits.admit(caller)
    limits.admit(caller)
    with pytest.raises(RateLimitedError):
        limits.admit(caller)
    for _ in range(5):
        limits.admit(own)


def dead_redis() -> RedisLimiter:
    return RedisLimiter(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2)


def test_redis_down_fails_open_to_a_local_share_of_the_budget(clock: Clock) -> None:
    limiter = FailoverLimiter(dead_redis(), mode="open", replicas=4, cooldown_s=5, clock=clock)
    fallbacks = RATE_LIMIT_FALLBACKS.labels("open")
    before = fallbacks._value.get()
    charge = [Charge("tenant:t:requests_per_minute", 40, 1)]

    # 40 per minute shared by 4 replicas: each counts 10 on its own while Redis is down.
    allowed = [limiter.draw(charge).allowed for _ in range(11)]

    assert allowed == [True] * 10 + [False]
    assert fallbacks._value.get() - before == 11
    assert RATE_LIMIT_BACKEND.labels("local")._value.get() == 1
    assert RATE_LIMIT_BACKEND.labels("redis")._value.get() == 0


def test_redis_down_fails_closed_when_configured(clock: Clock) -> None:
    limiter = FailoverLimiter(dead_redis(), mode="closed", replicas=1, cooldown_s=5, clock=clock)
    with pytest.raises(LimiterUnavailableError) as refused:
        limiter.draw([Charge("tenant:t:requests_per_minute", 40, 1)])
    assert 1 <= refused.value.retry_after_s <= 5


def test_redis_back_after_the_cool_down_is_used_again(
    clock: Clock, redis_scratch: RedisScratch
) -> None:
    shared = RedisLimiter(redis_scratch.url, key_prefix=redis_scratch.prefix)
    limiter = FailoverLimiter(shared, mode="open", replicas=2, cooldown_s=5, clock=clock)
    limiter._cooldown.start()  # as if Redis had just failed
    charge = [Charge("tenant:t:requests_per_minute", 10, 1)]

    assert limiter.draw(charge).engine == "local"
    clock.now += 6
    assert limiter.draw(charge).engine == "redis"
    assert redis_scratch.keys() == [f"{redis_scratch.prefix}tenant:t:requests_per_minute".encode()]


def test_a_changed_quota_applies_at_once(limiter: LocalLimiter | RedisLimiter) -> None:
    bucket = "tenant:t:requests_per_minute"
    assert limiter.draw([Charge(bucket, 1, 1)]).allowed
    assert not limiter.draw([Charge(bucket, 1, 1)]).allowed

    raised = limiter.draw([Charge(bucket, 100, 1)])  # quota raised to 100: 1 spent, 99 left
    assert raised.allowed
    assert 97.5 < raised.buckets[0].remaining <= 98.01

    lowered = limiter.draw([Charge(bucket, 1, 1)])  # back to 1 with 2 spent: wait it out
    assert not lowered.allowed
    assert 119 < lowered.retry_after_s <= 120


def test_fail_open_lets_a_request_larger_than_the_local_share_through_when_full(
    clock: Clock,
) -> None:
    limiter = FailoverLimiter(dead_redis(), mode="open", replicas=10, cooldown_s=5, clock=clock)
    limits = RateLimits(limiter)
    budget = quotas(tenant_tpm=20_000)  # 2,000 per replica while Redis is down

    reservation, decision = limits.reserve(budget, 4_000)  # fits the budget, not the share

    assert reservation is not None
    assert decision is not None
    assert decision.engine == "local"
    with pytest.raises(RateLimitedError) as refused:
        limits.reserve(budget, 100)  # the debt (2,000 beyond the share) is waited out
    assert refused.value.retry_after_s is not None
    assert 60 < refused.value.retry_after_s <= 63


def test_usage_beyond_a_reservation_counts_locally_while_redis_is_down(clock: Clock) -> None:
    limiter = FailoverLimiter(dead_redis(), mode="open", replicas=1, cooldown_s=5, clock=clock)
    charge = Charge("tenant:t:tokens_per_minute", 1000, 0)
    limiter.give([Charge(charge.bucket, 1000, 600)], engine="redis")  # reserved in Redis

    assert not limiter.draw([Charge(charge.bucket, 1000, 500)]).allowed  # 400 left locally
    limiter.give([Charge(charge.bucket, 1000, -300)], engine="redis")  # a refund: dropped
    assert not limiter.draw([Charge(charge.bucket, 1000, 500)]).allowed
