"""Embedding cache: keys, LRU behaviour, memory and Redis on one contract, a failing or hung
Redis never failing a query or an indexing, and the cached embedder on the real model."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import numpy.typing as npt
import pytest
from structlog.testing import capture_logs

from retrieval.cache import (
    EmbeddingCache,
    MemoryCache,
    RedisCache,
    Vector,
    VectorLike,
    cache_key,
    embed_query,
    normalise_query,
)
from retrieval.cached_embedder import CachedEmbedder
from retrieval.config import CacheConfig
from retrieval.embedding import ChunkEmbedder
from retrieval.errors import CacheUnavailableError
from retrieval.generation.base import Passage
from retrieval.generation.evidence import EvidenceGate
from retrieval.generation.extractive import ExtractiveGenerator
from tests.conftest import RedisScratch

T = "tenant"  # the scope (a tenant id) of the tests that need one

DIM = 4


class CountingEmbedder:
    """A deterministic stand-in model that records what it was asked to embed."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    @property
    def model_id(self) -> str:
        return "test-model"

    @property
    def dimension(self) -> int:
        return DIM

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.calls.append(list(texts))
        rows = []
        for text in texts:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")
            row = np.random.default_rng(seed).normal(size=DIM)
            rows.append(row / np.linalg.norm(row))
        return np.asarray(rows, dtype=np.float32)


class BrokenCache:
    """A cache whose backend is down: every call raises, as a Redis client would."""

    def get(self, key: str) -> Vector | None:
        raise ConnectionError("cache backend down")

    def put(self, key: str, vector: VectorLike) -> None:
        raise ConnectionError("cache backend down")

    def get_many(self, keys: Sequence[str]) -> list[Vector | None]:
        raise ConnectionError("cache backend down")

    def put_many(self, items: Mapping[str, VectorLike]) -> None:
        raise ConnectionError("cache backend down")

    def ping(self) -> None:
        raise ConnectionError("cache backend down")

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    "variant",
    [
        "What is  a\tcafé?",  # inner runs of whitespace
        "  What is a café?\n",  # outer whitespace
        "What is a cafe\u0301?",  # decomposed é (NFD)
        "What\u00a0is a café?",  # no-break space
    ],
)
def test_keys_ignore_whitespace_and_unicode_composition(variant: str) -> None:
    assert cache_key(T, "m", variant) == cache_key(T, "m", "What is a café?")


def test_keys_differ_by_text_case_and_model() -> None:
    base = cache_key(T, "m", "What is a café?")
    assert cache_key(T, "m", "what is a café?") != base
    assert cache_key(T, "other-model", "What is a café?") != base


def test_a_key_is_the_scope_the_model_id_and_a_sha256_without_the_text() -> None:
    key = cache_key(T, "all-MiniLM-L6-v2", "secret question")
    scope, model, digest = key.split(":")
    assert (scope, model) == (T, "all-MiniLM-L6-v2")
    assert digest == hashlib.sha256(b"secret question").hexdigest()
    assert "secret" not in key


def test_normalise_query_collapses_whitespace_to_single_spaces() -> None:
    assert normalise_query("\n a \t b  \u00a0c ") == "a b c"


def test_memory_cache_evicts_the_least_recently_used() -> None:
    cache = MemoryCache(max_entries=2)
    cache.put("a", [1.0])
    cache.put("b", [2.0])
    assert stored(cache, "a") == [1.0]  # "a" is now the most recent

    cache.put("c", [3.0])

    assert cache.get("b") is None
    assert stored(cache, "a") == [1.0]
    assert stored(cache, "c") == [3.0]
    assert len(cache) == 2


def test_memory_cache_put_refreshes_an_existing_key() -> None:
    cache = MemoryCache(max_entries=2)
    cache.put("a", [1.0])
    cache.put("b", [2.0])
    cache.put("a", [1.5])
    cache.put("c", [3.0])
    assert stored(cache, "a") == [1.5]
    assert cache.get("b") is None


def test_memory_cache_stores_copies_and_hands_out_read_only_vectors() -> None:
    cache = MemoryCache()
    vector = np.array([1.0, 2.0], dtype=np.float32)
    cache.put("k", vector)
    vector[0] = 9.0
    got = cache.get("k")
    assert got is not None
    assert got.tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match="read-only"):
        got[0] = 4.0
    assert stored(cache, "k") == [1.0, 2.0]


def test_memory_cache_batches_answer_in_order_and_count_as_uses() -> None:
    cache = MemoryCache(max_entries=3)
    cache.put_many({"a": [1.0], "b": [2.0], "c": [3.0]})

    got = cache.get_many(["c", "missing", "a"])  # "c" and "a" are now the most recent

    assert [None if v is None else v.tolist() for v in got] == [[3.0], None, [1.0]]
    cache.put_many({"d": [4.0]})
    assert cache.get("b") is None
    assert cache.get_many([]) == []


def test_memory_cache_needs_room_for_one_entry() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        MemoryCache(max_entries=0)


def test_memory_cache_stays_bounded_under_concurrent_use() -> None:
    cache = MemoryCache(max_entries=50)
    barrier = threading.Barrier(8)

    def hammer(worker: int) -> None:
        barrier.wait()
        for i in range(500):
            cache.put(f"{worker}-{i}", [float(i)])
            cache.get(f"{worker}-{i - 1}")

    threads = [threading.Thread(target=hammer, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(cache) == 50


def test_embed_query_computes_once_then_hits_the_cache() -> None:
    embedder, cache = CountingEmbedder(), MemoryCache()

    first, first_hit = embed_query(embedder, cache, "How tall is the tower?", scope=T)
    second, second_hit = embed_query(embedder, cache, "  How tall is   the tower? ", scope=T)

    assert (first_hit, second_hit) == (False, True)
    assert second == first
    assert len(first) == DIM
    assert embedder.calls == [["How tall is the tower?"]]  # the normalised text, once


def test_a_failing_cache_degrades_to_computing() -> None:
    embedder = CountingEmbedder()

    with capture_logs() as logs:
        vector, hit = embed_query(embedder, BrokenCache(), "How tall is the tower?", scope=T)

    assert hit is False
    assert vector == [float(x) for x in embedder.encode(["How tall is the tower?"])[0]]
    failed = [e for e in logs if e["event"] == "embedding_cache_failed"]
    assert [e["operation"] for e in failed] == ["get", "put"]
    assert all(e["log_level"] == "warning" for e in failed)


def test_a_cached_vector_of_the_wrong_length_is_recomputed() -> None:
    embedder, cache = CountingEmbedder(), MemoryCache()
    cache.put(cache_key(T, embedder.model_id, "q"), [0.5, 0.5])

    vector, hit = embed_query(embedder, cache, "q", scope=T)

    assert hit is False
    assert len(vector) == DIM
    assert stored(cache, cache_key(T, embedder.model_id, "q")) == vector


def stored(cache: EmbeddingCache, key: str) -> list[float] | None:
    """What ``cache`` holds under ``key``, as plain floats."""
    vector = cache.get(key)
    return None if vector is None else vector.tolist()


# Both implementations, side by side: one contract, run on each.


@pytest.fixture(params=["memory", "redis"])
def any_cache(request: pytest.FixtureRequest) -> Iterator[EmbeddingCache]:
    if request.param == "memory":
        yield MemoryCache()
        return
    scratch: RedisScratch = request.getfixturevalue("redis_scratch")
    cache = RedisCache(scratch.url, CacheConfig(key_prefix=scratch.prefix))
    yield cache
    cache.close()


def test_a_cache_answers_a_batch_in_order_with_none_for_misses(any_cache: EmbeddingCache) -> None:
    a = np.array([0.25, -1.5, 3.0], dtype=np.float32)
    any_cache.put_many({"a": a, "b": [1.0, 2.0, 3.0]})

    got = any_cache.get_many(["b", "missing", "a"])

    assert [None if v is None else v.tolist() for v in got] == [[1.0, 2.0, 3.0], None, a.tolist()]
    assert all(v is None or v.dtype == np.float32 for v in got)
    assert any_cache.get_many([]) == []


def test_a_cache_overwrites_and_keeps_single_entries_too(any_cache: EmbeddingCache) -> None:
    any_cache.put("k", [1.0, 2.0])
    any_cache.put_many({"k": [3.0, 4.0]})
    assert stored(any_cache, "k") == [3.0, 4.0]
    assert any_cache.get("other") is None


def test_a_cache_hands_out_read_only_vectors(any_cache: EmbeddingCache) -> None:
    any_cache.put("k", [1.0, 2.0])
    [got] = any_cache.get_many(["k"])
    assert got is not None
    with pytest.raises(ValueError, match="read-only"):
        got[0] = 0.0


# RedisCache: what Redis holds, and what happens while it is down.


def test_redis_stores_float32_bytes_under_the_prefix_with_the_ttl(
    redis_scratch: RedisScratch,
) -> None:
    cache = RedisCache(redis_scratch.url, CacheConfig(key_prefix=redis_scratch.prefix, ttl_s=90))
    key = cache_key(T, "m", "a text")
    cache.put_many({key: np.arange(384, dtype=np.float32)})

    [name] = redis_scratch.keys()
    assert name == f"{redis_scratch.prefix}{key}".encode()
    assert redis_scratch.client.strlen(name) == 4 * 384  # float32: 4 bytes per dimension
    assert 0 < redis_scratch.client.ttl(name) <= 90
    cache.close()


def test_a_value_that_is_no_vector_reads_as_a_miss(redis_scratch: RedisScratch) -> None:
    cache = RedisCache(redis_scratch.url, CacheConfig(key_prefix=redis_scratch.prefix))
    redis_scratch.client.set(f"{redis_scratch.prefix}odd", b"\x00\x01\x02")  # 3 bytes
    assert cache.get_many(["odd"]) == [None]
    cache.close()


class FakeClock:
    """A monotonic clock the test moves by hand, so a cool-down passes without waiting."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def closed_port() -> int:
    """A local TCP port nothing listens on: connecting is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Unresponsive:
    """A TCP server that accepts connections and never answers: a hung Redis.

    Counts the connections it accepts, so a test sees how often a client tried.
    """

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.05)  # so the accepting thread sees close() soon
        self.port = int(self._server.getsockname()[1])
        self.accepted: list[socket.socket] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                connection, _ = self._server.accept()
            except TimeoutError:
                continue
            self.accepted.append(connection)

    def close(self) -> None:
        self._closed.set()
        self._thread.join()
        self._server.close()
        for connection in self.accepted:
            connection.close()


@pytest.fixture
def unresponsive() -> Iterator[Unresponsive]:
    server = Unresponsive()
    yield server
    server.close()


def test_a_refused_connection_raises_and_starts_the_cool_down(closed_port: int) -> None:
    clock = FakeClock()
    cache = RedisCache(f"redis://127.0.0.1:{closed_port}/0", CacheConfig(cooldown_s=5), clock=clock)

    with pytest.raises(CacheUnavailableError, match="ConnectionError"):
        cache.get_many(["k"])
    assert cache.cooling_down

    # Within the cool-down Redis is not called: misses and dropped puts, no error.
    clock.now += 4.9
    assert cache.get_many(["k", "l"]) == [None, None]
    cache.put_many({"k": [1.0]})

    # After it, the next call tries Redis again.
    clock.now += 0.2
    assert not cache.cooling_down
    with pytest.raises(CacheUnavailableError):
        cache.put_many({"k": [1.0]})


def test_a_hung_redis_costs_one_timed_out_try_per_cool_down(unresponsive: Unresponsive) -> None:
    clock = FakeClock()
    config = CacheConfig(redis_connect_timeout_s=0.1, redis_timeout_s=0.1, cooldown_s=5)
    cache = RedisCache(f"redis://127.0.0.1:{unresponsive.port}/0", config, clock=clock)

    started = time.monotonic()
    with pytest.raises(CacheUnavailableError, match="TimeoutError"):
        cache.get_many(["k"])
    for _ in range(20):
        assert cache.get_many(["k"]) == [None]
    elapsed = time.monotonic() - started

    # One connection, one timed-out read, no retries; the other 20 calls never reached it.
    assert len(unresponsive.accepted) == 1
    # Generous: the configured timeout is 0.1 s; redis-py's defaults (5 s timeouts, 10
    # retries) would keep the first call alone for about a minute.
    assert elapsed < 5


# CachedEmbedder and embed_query on the real model.


class RecordingModel:
    """The real model, recording what it is asked to encode (texts and token counts)."""

    def __init__(self, inner: ChunkEmbedder) -> None:
        self.inner = inner
        self.calls: list[list[str]] = []
        self.counts: list[list[int] | None] = []

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    @property
    def max_seq_length(self) -> int:
        return self.inner.max_seq_length

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def encode(
        self, texts: Sequence[str], *, token_counts: Sequence[int] | None = None
    ) -> npt.NDArray[np.float32]:
        self.calls.append(list(texts))
        self.counts.append(None if token_counts is None else list(token_counts))
        return self.inner.encode(texts, token_counts=token_counts)


class Lookups:
    """An ``on_lookup`` observer that keeps every ``(hits, misses)`` it is given."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, int]] = []

    def __call__(self, hits: int, misses: int) -> None:
        self.seen.append((hits, misses))


class CountingChunkModel(CountingEmbedder):
    """The deterministic stand-in with the token-counting interface indexing drives."""

    @property
    def max_seq_length(self) -> int:
        return 16

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def encode(
        self, texts: Sequence[str], *, token_counts: Sequence[int] | None = None
    ) -> npt.NDArray[np.float32]:
        return super().encode(texts)


@pytest.fixture
def model(embedder: ChunkEmbedder) -> RecordingModel:
    return RecordingModel(embedder)


TIDES = [
    "Tide pools form where the sea retreats over rock.",
    "Anemones close when the water leaves them.",
    "Barnacles glue themselves head first to the stone.",
    "Hermit crabs trade shells as they grow.",
]


@pytest.mark.slow
def test_cached_embedder_encodes_only_the_misses_and_returns_the_models_vectors(
    model: RecordingModel, embedder: ChunkEmbedder, any_cache: EmbeddingCache
) -> None:
    lookups = Lookups()
    cached = CachedEmbedder(model, any_cache, on_lookup=lookups).scoped(T)

    first = cached.encode(TIDES[:3])
    second = cached.encode([TIDES[3], TIDES[0], TIDES[2]])

    assert model.calls == [TIDES[:3], [TIDES[3]]]
    assert lookups.seen == [(0, 3), (2, 1)]
    assert first.dtype == np.float32
    assert second.shape == (3, embedder.dimension)
    np.testing.assert_allclose(first, embedder.encode(TIDES[:3]), atol=1e-5)
    np.testing.assert_allclose(second, embedder.encode([TIDES[3], TIDES[0], TIDES[2]]), atol=1e-5)


@pytest.mark.slow
def test_cached_embedder_encodes_a_repeated_text_once(model: RecordingModel) -> None:
    lookups = Lookups()
    cached = CachedEmbedder(model, MemoryCache(), on_lookup=lookups).scoped(T)

    rows = cached.encode([TIDES[0], TIDES[1], TIDES[0]])

    assert model.calls == [[TIDES[0], TIDES[1]]]
    assert lookups.seen == [(0, 3)]  # one count per text
    np.testing.assert_array_equal(rows[0], rows[2])


@pytest.mark.slow
def test_cached_embedder_embeds_the_normalised_text_as_queries_do(
    model: RecordingModel, embedder: ChunkEmbedder
) -> None:
    cache = MemoryCache()
    cached = CachedEmbedder(model, cache).scoped(T)
    messy = "  Tide pools form where\n the sea   retreats over rock. "

    [row] = cached.encode([messy], token_counts=[embedder.count_tokens(messy)])
    vector, hit = embed_query(model, cache, TIDES[0], scope=T)

    # One key, one vector: the query finds what indexing stored, and both are the vector of
    # the normalised text.
    assert model.calls == [[TIDES[0]]]
    assert model.counts == [[embedder.count_tokens(TIDES[0])]]  # recounted, as the text changed
    assert hit is True
    np.testing.assert_allclose(row, vector, atol=1e-6)
    np.testing.assert_allclose(row, embedder.encode([TIDES[0]])[0], atol=1e-5)


@pytest.mark.slow
def test_cached_embedder_passes_the_chunkers_token_counts_through(model: RecordingModel) -> None:
    cached = CachedEmbedder(model, MemoryCache()).scoped(T)
    cached.encode(TIDES[:2], token_counts=[11, 12])  # made up: the model trusts them
    assert model.counts == [[11, 12]]


@pytest.mark.slow
def test_cached_embedder_recomputes_a_cached_vector_of_the_wrong_length(
    model: RecordingModel, embedder: ChunkEmbedder
) -> None:
    cache = MemoryCache()
    cache.put(cache_key(T, model.model_id, TIDES[0]), [0.5, 0.5])

    with capture_logs() as logs:
        [row] = CachedEmbedder(model, cache).scoped(T).encode([TIDES[0]])

    assert model.calls == [[TIDES[0]]]
    assert [e["event"] for e in logs] == ["embedding_cache_corrupt"]
    np.testing.assert_allclose(row, embedder.encode([TIDES[0]])[0], atol=1e-5)
    assert stored(cache, cache_key(T, model.model_id, TIDES[0])) == row.tolist()


def test_cached_embedder_refuses_token_counts_of_another_length() -> None:
    with pytest.raises(ValueError, match="one count per text"):
        CachedEmbedder(CountingChunkModel(), MemoryCache()).scoped(T).encode(
            ["a", "b"], token_counts=[1]
        )


def test_cached_embedder_of_nothing_is_an_empty_matrix() -> None:
    model = CountingChunkModel()
    rows = CachedEmbedder(model, MemoryCache()).scoped(T).encode([])
    assert rows.shape == (0, DIM)
    assert model.calls == []


@pytest.mark.slow
def test_redis_down_still_embeds_queries_and_chunks_correctly(
    closed_port: int, model: RecordingModel, embedder: ChunkEmbedder
) -> None:
    cache = RedisCache(f"redis://127.0.0.1:{closed_port}/0", CacheConfig(cooldown_s=60))
    lookups = Lookups()

    with capture_logs() as logs:
        rows = CachedEmbedder(model, cache, on_lookup=lookups).scoped(T).encode(TIDES)
        vector, hit = embed_query(model, cache, "Where do tide pools form?", scope=T)

    np.testing.assert_allclose(rows, embedder.encode(TIDES), atol=1e-5)
    np.testing.assert_allclose(vector, embedder.encode(["Where do tide pools form?"])[0], atol=1e-5)
    assert hit is False
    assert lookups.seen == [(0, len(TIDES))]
    # One warning for the failed lookup; the cool-down then skips Redis without a word.
    failed = [e for e in logs if e["event"] == "embedding_cache_failed"]
    assert [(e["operation"], e["log_level"]) for e in failed] == [("get", "warning")]


def test_keys_belong_to_their_scope() -> None:
    text = "a sentence of some tenant's document"
    assert cache_key("tenant-a", "m", text) != cache_key("tenant-b", "m", text)
    assert cache_key("tenant-a", "m", text) == cache_key("tenant-a", "m", text)


@pytest.mark.slow
def test_a_tenants_view_never_reads_another_tenants_entries(model: RecordingModel) -> None:
    cache = MemoryCache()
    cached = CachedEmbedder(model, cache)
    cached.scoped("tenant-a").encode([TIDES[0]])
    cached.scoped("tenant-b").encode([TIDES[0]])
    _, hit = embed_query(model, cache, TIDES[0], scope="tenant-c")
    # Each tenant paid for its own vector: none was served another tenant's entry.
    assert model.calls == [[TIDES[0]]] * 3
    assert hit is False
    assert len(cache) == 3


@pytest.mark.slow
def test_without_a_scope_the_cache_is_never_reached(model: RecordingModel) -> None:
    cache = MemoryCache()
    lookups = Lookups()
    unscoped = CachedEmbedder(model, cache, on_lookup=lookups)
    assert unscoped.scope is None
    first = unscoped.encode([TIDES[0], TIDES[1]])
    second = unscoped.encode([TIDES[0]])
    assert len(cache) == 0  # nothing stored ...
    assert lookups.seen == []  # ... nothing looked up ...
    assert model.calls == [[TIDES[0], TIDES[1]], [TIDES[0]]]  # ... everything computed
    # (the same vector, to float rounding: the model pads a text in a batch)
    np.testing.assert_allclose(first[0], second[0], atol=1e-6)


@pytest.mark.slow
def test_the_gate_and_the_extractive_backend_cache_in_the_tenants_entries(
    model: RecordingModel,
) -> None:
    cache = MemoryCache()
    sentences = CachedEmbedder(model, cache)
    passages = [Passage(text=TIDES[0] + " " + TIDES[1], score=0.9, document_id="d", chunk_id="c")]
    vector = [float(x) for x in model.encode([TIDES[0]])[0]]
    model.calls.clear()
    EvidenceGate(sentences).scoped("tenant-a").judge(TIDES[0], vector, passages)
    ExtractiveGenerator(sentences).scoped("tenant-a").generate(TIDES[0], vector, passages)
    ExtractiveGenerator(sentences).scoped("tenant-b").generate(TIDES[0], vector, passages)
    # tenant-a's answer reused the sentences its gate embedded; tenant-b embedded its own.
    assert model.calls == [[TIDES[0], TIDES[1]]] * 2
    for tenant in ("tenant-a", "tenant-b"):
        assert cache.get(cache_key(tenant, model.model_id, TIDES[1])) is not None
