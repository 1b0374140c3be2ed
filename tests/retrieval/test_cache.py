"""Query-embedding cache: keys, LRU behaviour, and a failing cache never failing a query."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pytest
from structlog.testing import capture_logs

from retrieval.cache import MemoryCache, cache_key, embed_query, normalise_query

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

    def get(self, key: str) -> list[float] | None:
        raise ConnectionError("cache backend down")

    def put(self, key: str, vector: Sequence[float]) -> None:
        raise ConnectionError("cache backend down")


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
    assert cache_key("m", variant) == cache_key("m", "What is a café?")


def test_keys_differ_by_text_case_and_model() -> None:
    base = cache_key("m", "What is a café?")
    assert cache_key("m", "what is a café?") != base
    assert cache_key("other-model", "What is a café?") != base


def test_a_key_is_the_model_id_and_a_sha256_without_the_text() -> None:
    key = cache_key("all-MiniLM-L6-v2", "secret question")
    model, digest = key.rsplit(":", 1)
    assert model == "all-MiniLM-L6-v2"
    assert digest == hashlib.sha256(b"secret question").hexdigest()
    assert "secret" not in key


def test_normalise_query_collapses_whitespace_to_single_spaces() -> None:
    assert normalise_query("\n a \t b  \u00a0c ") == "a b c"


def test_memory_cache_evicts_the_least_recently_used() -> None:
    cache = MemoryCache(max_entries=2)
    cache.put("a", [1.0])
    cache.put("b", [2.0])
    assert cache.get("a") == [1.0]  # "a" is now the most recent

    cache.put("c", [3.0])

    assert cache.get("b") is None
    assert cache.get("a") == [1.0]
    assert cache.get("c") == [3.0]
    assert len(cache) == 2


def test_memory_cache_put_refreshes_an_existing_key() -> None:
    cache = MemoryCache(max_entries=2)
    cache.put("a", [1.0])
    cache.put("b", [2.0])
    cache.put("a", [1.5])
    cache.put("c", [3.0])
    assert cache.get("a") == [1.5]
    assert cache.get("b") is None


def test_memory_cache_hands_out_copies() -> None:
    cache = MemoryCache()
    vector = [1.0, 2.0]
    cache.put("k", vector)
    vector.append(3.0)
    got = cache.get("k")
    assert got == [1.0, 2.0]
    assert got is not None
    got.append(4.0)
    assert cache.get("k") == [1.0, 2.0]


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

    first, first_hit = embed_query(embedder, cache, "How tall is the tower?")
    second, second_hit = embed_query(embedder, cache, "  How tall is   the tower? ")

    assert (first_hit, second_hit) == (False, True)
    assert second == first
    assert len(first) == DIM
    assert embedder.calls == [["How tall is the tower?"]]  # the normalised text, once


def test_a_failing_cache_degrades_to_computing() -> None:
    embedder = CountingEmbedder()

    with capture_logs() as logs:
        vector, hit = embed_query(embedder, BrokenCache(), "How tall is the tower?")

    assert hit is False
    assert vector == [float(x) for x in embedder.encode(["How tall is the tower?"])[0]]
    failed = [e for e in logs if e["event"] == "embedding_cache_failed"]
    assert [e["operation"] for e in failed] == ["get", "put"]
    assert all(e["log_level"] == "warning" for e in failed)


def test_a_cached_vector_of_the_wrong_length_is_recomputed() -> None:
    embedder, cache = CountingEmbedder(), MemoryCache()
    cache.put(cache_key(embedder.model_id, "q"), [0.5, 0.5])

    vector, hit = embed_query(embedder, cache, "q")

    assert hit is False
    assert len(vector) == DIM
    assert cache.get(cache_key(embedder.model_id, "q")) == vector
