"""The answer cache: keys that name everything an answer depends on, generations that drop a
namespace's answers at once, both implementations side by side, and Redis outages."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from retrieval.answers import (
    AnswerCache,
    MemoryAnswerCache,
    RedisAnswerCache,
    answer_key,
    invalidate,
)
from retrieval.config import AnswerCacheConfig, CacheConfig
from retrieval.errors import CacheUnavailableError
from tests.conftest import RedisScratch, free_port

ANSWER = {"text": "A raft.", "answerable": True}


@pytest.fixture(params=["memory", "redis"])
def cache(request: pytest.FixtureRequest) -> Iterator[AnswerCache]:
    if request.param == "memory":
        yield MemoryAnswerCache(AnswerCacheConfig())
        return
    scratch: RedisScratch = request.getfixturevalue("redis_scratch")
    redis_cache = RedisAnswerCache(
        scratch.url, AnswerCacheConfig(key_prefix=scratch.prefix), CacheConfig()
    )
    yield redis_cache
    redis_cache.close()


def test_a_key_names_namespace_generation_and_the_answers_shape() -> None:
    shape = {"question": "q", "filter": {"field": "year", "eq": 1}, "top_k": 5}
    key = answer_key("ns", 3, shape)
    assert key.startswith("ns:3:")
    assert answer_key("ns", 3, dict(reversed(shape.items()))) == key  # canonical JSON
    assert answer_key("ns", 4, shape) != key
    assert answer_key("ns", 3, {**shape, "top_k": 6}) != key


def test_an_answer_comes_back_until_its_namespace_changes(cache: AnswerCache) -> None:
    generation = cache.generation("ns")
    key = answer_key("ns", generation, {"question": "q"})
    assert cache.get(key) is None
    cache.put(key, ANSWER)
    assert cache.get(key) == ANSWER
    other = answer_key("other", cache.generation("other"), {"question": "q"})
    cache.put(other, ANSWER)

    invalidate(cache, "ns")
    assert cache.generation("ns") == generation + 1
    assert cache.get(answer_key("ns", cache.generation("ns"), {"question": "q"})) is None
    assert cache.get(other) == ANSWER  # other namespaces keep theirs


def test_the_memory_cache_evicts_the_least_recent_and_expires_old_answers() -> None:
    now = [0.0]
    cache = MemoryAnswerCache(AnswerCacheConfig(max_entries=2, ttl_s=60), clock=lambda: now[0])
    cache.put("a", ANSWER)
    cache.put("b", ANSWER)
    assert cache.get("a") == ANSWER  # now the most recent
    cache.put("c", ANSWER)
    assert (cache.get("a"), cache.get("b")) == (ANSWER, None)
    now[0] = 61
    assert cache.get("a") is None
    assert len(cache) == 1


def test_redis_keeps_answers_for_the_ttl(redis_scratch: RedisScratch) -> None:
    cache = RedisAnswerCache(
        redis_scratch.url,
        AnswerCacheConfig(key_prefix=redis_scratch.prefix, ttl_s=90),
        CacheConfig(),
    )
    cache.put("ns:0:abc", ANSWER)
    name = f"{redis_scratch.prefix}ns:0:abc".encode()
    assert 0 < redis_scratch.client.ttl(name) <= 90
    redis_scratch.client.set(f"{redis_scratch.prefix}ns:0:bad", b"not json")
    assert cache.get("ns:0:bad") is None
    cache.close()


def test_a_redis_outage_raises_fast_then_cools_down() -> None:
    cache = RedisAnswerCache(
        f"redis://127.0.0.1:{free_port()}/0", AnswerCacheConfig(), CacheConfig(cooldown_s=60)
    )
    started = time.perf_counter()
    with pytest.raises(CacheUnavailableError, match="failed"):
        cache.generation("ns")
    with pytest.raises(CacheUnavailableError, match="cooling down"):
        cache.get("ns:0:abc")
    assert time.perf_counter() - started < 2
    invalidate(cache, "ns")  # logged, never raised
    cache.close()
