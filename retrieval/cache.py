"""Caching query embeddings: the same question, asked again, skips the model.

A cache is an optimisation, never a dependency: :func:`embed_query` treats any cache failure as
a miss and computes the vector, so a Redis outage slows queries down but never fails them.
"""

from __future__ import annotations

import hashlib
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol

import structlog

from retrieval.embedding import Embedder

log = structlog.get_logger(__name__)


def normalise_query(text: str) -> str:
    """``text`` in NFC with outer whitespace stripped and inner runs collapsed to one space.

    Texts that differ only in these ways share a cache entry, so they must embed identically:
    :func:`embed_query` embeds this form, never the raw text.
    """
    return " ".join(unicodedata.normalize("NFC", text).split())


def cache_key(model_id: str, text: str) -> str:
    """Cache key of ``text`` embedded by ``model_id``: the model id, ``:``, sha256 of the text.

    The text is normalised first (:func:`normalise_query`) and hashed, so keys have a fixed
    length and never carry the question itself into the cache.
    """
    digest = hashlib.sha256(normalise_query(text).encode("utf-8")).hexdigest()
    return f"{model_id}:{digest}"


class EmbeddingCache(Protocol):
    """Where query vectors are kept between requests. Implementations may raise on failure."""

    def get(self, key: str) -> list[float] | None:
        """The vector stored under ``key``, or None."""
        ...

    def put(self, key: str, vector: Sequence[float]) -> None:
        """Store ``vector`` under ``key``, possibly evicting others."""
        ...


class MemoryCache:
    """A thread-safe in-process LRU of at most ``max_entries`` vectors.

    An ``OrderedDict`` under a lock: no cache library is installed (``cachetools`` is not), and
    this is a dozen lines. A hit or a put makes the entry the most recent; a put beyond the
    limit evicts the least recent.
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self._max_entries = max_entries
        # Tuples, so no caller can mutate what the cache holds.
        self._entries: OrderedDict[str, tuple[float, ...]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> list[float] | None:
        """The vector stored under ``key`` (a fresh list), or None; marks it most recent."""
        with self._lock:
            vector = self._entries.get(key)
            if vector is None:
                return None
            self._entries.move_to_end(key)
            return list(vector)

    def put(self, key: str, vector: Sequence[float]) -> None:
        """Store a copy of ``vector`` under ``key``, evicting the least recent beyond the limit."""
        with self._lock:
            self._entries[key] = tuple(float(x) for x in vector)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


def embed_query(embedder: Embedder, cache: EmbeddingCache, text: str) -> tuple[list[float], bool]:
    """The embedding of the query ``text``, from ``cache`` when possible.

    Returns the vector (unit length, ``embedder.dimension`` floats) and whether it came from the
    cache. On a miss the normalised text is embedded and stored. Any exception from the cache,
    and a cached vector of the wrong length, count as a miss and are logged; they never raise.

    Raises:
        Whatever ``embedder.encode`` raises: without a vector there is no query.
    """
    key = cache_key(embedder.model_id, text)
    try:
        cached = cache.get(key)
    except Exception as exc:  # any cache failure degrades to computing, by contract
        log.warning("embedding_cache_failed", operation="get", error=repr(exc))
        cached = None
    if cached is not None:
        if len(cached) == embedder.dimension:
            return list(cached), True
        log.warning("embedding_cache_corrupt", length=len(cached), expected=embedder.dimension)

    vector = [float(x) for x in embedder.encode([normalise_query(text)])[0]]
    try:
        cache.put(key, vector)
    except Exception as exc:  # as above: the vector is computed, the cache is optional
        log.warning("embedding_cache_failed", operation="put", error=repr(exc))
    return vector, False
