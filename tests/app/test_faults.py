"""The fault registry: one fault per target, TTLs, and the Redis registry every replica reads."""

from __future__ import annotations

import time

import pytest

from app.guards.faults import (
    Fault,
    FaultRegistryUnavailableError,
    MemoryFaults,
    RedisFaults,
    new_fault,
    strike,
)
from retrieval.config import CacheConfig
from tests.conftest import RedisScratch, free_port


def test_a_new_fault_replaces_its_targets_and_expires_with_its_ttl() -> None:
    faults = MemoryFaults()
    faults.add(new_fault("cache", "error"))
    faults.add(new_fault("cache", "delay", delay_ms=5))
    faults.add(Fault("broker", "error", expires_at=time.time() - 1))  # already over
    assert faults.active() == [Fault("cache", "delay", delay_ms=5)]
    assert faults.find("broker") is None
    faults.clear()
    assert faults.find("cache") is None


def test_strike_waits_then_fails_as_the_fault_says() -> None:
    faults = MemoryFaults()
    strike(faults, "cache", lambda: RuntimeError("never"))  # no fault: nothing happens
    faults.add(new_fault("cache", "error", delay_ms=50))
    started = time.perf_counter()
    with pytest.raises(RuntimeError, match="down"):
        strike(faults, "cache", lambda: RuntimeError("down"))
    assert time.perf_counter() - started >= 0.05


def test_every_replica_sees_a_drill_kept_in_redis(redis_scratch: RedisScratch) -> None:
    key = f"{redis_scratch.prefix}faults"
    here = RedisFaults(redis_scratch.url, CacheConfig(), key=key)
    there = RedisFaults(redis_scratch.url, CacheConfig(), key=key)
    assert there.find("vector_store") is None
    here.add(new_fault("vector_store", "delay", delay_ms=100, ttl_s=60))
    assert here.find("vector_store") is not None  # at once where it was added
    time.sleep(0.6)  # other replicas re-read every REFRESH_S (0.5 s)
    seen = there.find("vector_store")
    assert seen is not None
    assert (seen.mode, seen.delay_ms) == ("delay", 100)
    redis_scratch.client.hset(key, "embedder", b"not a fault")
    assert [f.target for f in there.active()] == ["vector_store"]
    here.clear()
    assert here.active() == []
    here.close()
    there.close()


def test_a_redis_registry_that_is_down_applies_no_fault_and_refuses_changes() -> None:
    faults = RedisFaults(f"redis://127.0.0.1:{free_port()}/0", CacheConfig())
    assert faults.find("cache") is None
    with pytest.raises(FaultRegistryUnavailableError):
        faults.add(new_fault("cache", "error"))
    faults.close()
