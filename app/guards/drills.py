"""Wrappers that inject the registry's faults (:mod:`app.guards.faults`) into real adapters.

Each wrapper has its adapter's whole interface, consults the registry before each call and then
delegates: in ``error`` mode the call fails with the error the real dependency's outage raises
(so the code above reacts exactly as it would to the real thing), in ``delay`` mode it waits
first. ``ping`` is faulted like any call (readiness reports a drill as it would the outage);
``close`` and pure bookkeeping (token counts, model ids, queue depth in delay mode) are never
faulted. The wrapped adapter is private: nothing above reaches past a wrapper.

- ``vector_store``: the vector store, inside its breaker; ``StoreUnavailableError``.
- ``embedder``: the embedding model (queries and indexing); ``EmbeddingUnavailableError``.
- ``generator``: each LLM endpoint, inside its breaker (never the extractive answer, the last
  fallback); ``GenerationUnavailableError``.
- ``cache``: the embedding and answer caches; ``CacheUnavailableError`` (callers see a miss).
- ``broker``: the task queue; ``ConnectionError`` (the upload is kept, and sent again by the
  reaper, or at the next start in embedded mode).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from app.guards.faults import FaultRegistry, Target, strike
from ingestion.embedder import ChunkEmbedder
from retrieval.answers import AnswerCache, CachedAnswer
from retrieval.cache import EmbeddingCache, Vector, VectorLike
from retrieval.errors import (
    CacheUnavailableError,
    EmbeddingUnavailableError,
    GenerationUnavailableError,
    StoreUnavailableError,
)
from retrieval.filters import Expr
from retrieval.generation.base import (
    DEFAULT_OPTIONS,
    Answer,
    GenerationBackend,
    GenerationOptions,
    Passage,
    StreamEvent,
)
from retrieval.stores.base import CollectionSpec, Hit, Point, SearchRequest, VectorStore, Where
from workers.queue import TaskQueue


def _message(target: Target) -> str:
    return f"injected fault: {target} (POST /v1/admin/faults)"


class FaultyStore:
    """A :class:`~retrieval.stores.base.VectorStore` subject to ``vector_store`` faults."""

    def __init__(self, store: VectorStore, faults: FaultRegistry) -> None:
        self._inner = store
        self._faults = faults

    def _strike(self) -> None:
        strike(
            self._faults, "vector_store", lambda: StoreUnavailableError(_message("vector_store"))
        )

    def ensure_collection(self, name: str, spec: CollectionSpec) -> None:
        self._strike()
        self._inner.ensure_collection(name, spec)

    def drop_collection(self, name: str) -> None:
        self._strike()
        self._inner.drop_collection(name)

    def upsert(self, name: str, points: Sequence[Point]) -> None:
        self._strike()
        self._inner.upsert(name, points)

    def search(self, name: str, request: SearchRequest) -> list[Hit]:
        self._strike()
        return self._inner.search(name, request)

    def delete(self, name: str, *, where: Where) -> None:
        self._strike()
        self._inner.delete(name, where=where)

    def count(self, name: str, *, where: Where, filter: Expr | None = None) -> int:
        self._strike()
        return self._inner.count(name, where=where, filter=filter)

    def ping(self) -> None:
        self._strike()
        self._inner.ping()

    def check_open(self) -> None:
        self._inner.check_open()  # no call to the store: a drill has nothing to strike

    def close(self) -> None:
        self._inner.close()


class FaultyEmbedder:
    """An embedding model subject to ``embedder`` faults (ingestion's ``ChunkEmbedder`` shape, which
    also serves queries)."""

    def __init__(self, embedder: ChunkEmbedder, faults: FaultRegistry) -> None:
        self._inner = embedder
        self._faults = faults

    @property
    def model_id(self) -> str:
        return self._inner.model_id

    @property
    def dimension(self) -> int:
        return self._inner.dimension

    @property
    def max_seq_length(self) -> int:
        return self._inner.max_seq_length

    def count_tokens(self, text: str) -> int:
        return self._inner.count_tokens(text)

    def encode(
        self, texts: Sequence[str], *, token_counts: Sequence[int] | None = None
    ) -> npt.NDArray[np.float32]:
        strike(self._faults, "embedder", lambda: EmbeddingUnavailableError(_message("embedder")))
        return self._inner.encode(texts, token_counts=token_counts)


class FaultyBackend:
    """A generation backend subject to ``generator`` faults."""

    def __init__(self, backend: GenerationBackend, faults: FaultRegistry) -> None:
        self._inner = backend
        self._faults = faults

    @property
    def name(self) -> str:
        return self._inner.name

    def _strike(self) -> None:
        strike(
            self._faults,
            "generator",
            lambda: GenerationUnavailableError(_message("generator"), backend=self._inner.name),
        )

    def generate(
        self,
        question: str,
        question_vector: Sequence[float],
        passages: Sequence[Passage],
        *,
        options: GenerationOptions = DEFAULT_OPTIONS,
    ) -> Answer:
        self._strike()
        return self._inner.generate(question, question_vector, passages, options=options)

    def stream(
        self,
        question: str,
        question_vector: Sequence[float],
        passages: Sequence[Passage],
        *,
        options: GenerationOptions = DEFAULT_OPTIONS,
    ) -> Iterator[StreamEvent]:
        self._strike()
        yield from self._inner.stream(question, question_vector, passages, options=options)


class FaultyCache:
    """An embedding cache subject to ``cache`` faults."""

    def __init__(self, cache: EmbeddingCache, faults: FaultRegistry) -> None:
        self._inner = cache
        self._faults = faults

    def _strike(self) -> None:
        strike(self._faults, "cache", lambda: CacheUnavailableError(_message("cache")))

    def get(self, key: str) -> Vector | None:
        self._strike()
        return self._inner.get(key)

    def put(self, key: str, vector: VectorLike) -> None:
        self._strike()
        self._inner.put(key, vector)

    def get_many(self, keys: Sequence[str]) -> list[Vector | None]:
        self._strike()
        return self._inner.get_many(keys)

    def put_many(self, items: Mapping[str, VectorLike]) -> None:
        self._strike()
        self._inner.put_many(items)

    def ping(self) -> None:
        self._strike()
        self._inner.ping()

    def close(self) -> None:
        self._inner.close()


class FaultyAnswerCache:
    """An answer cache subject to ``cache`` faults."""

    def __init__(self, cache: AnswerCache, faults: FaultRegistry) -> None:
        self._inner = cache
        self._faults = faults

    def _strike(self) -> None:
        strike(self._faults, "cache", lambda: CacheUnavailableError(_message("cache")))

    def generation(self, namespace_id: str) -> int:
        self._strike()
        return self._inner.generation(namespace_id)

    def invalidate(self, namespace_id: str) -> None:
        self._strike()
        self._inner.invalidate(namespace_id)

    def get(self, key: str) -> CachedAnswer | None:
        self._strike()
        return self._inner.get(key)

    def put(self, key: str, answer: CachedAnswer) -> None:
        self._strike()
        self._inner.put(key, answer)

    def ping(self) -> None:
        self._strike()
        self._inner.ping()

    def close(self) -> None:
        self._inner.close()


class FaultyQueue:
    """A task queue subject to ``broker`` faults: ``enqueue`` fails as a broker outage does,
    and ``depth`` reads -1 (unreachable) in ``error`` mode."""

    def __init__(self, queue: TaskQueue, faults: FaultRegistry) -> None:
        self._inner = queue
        self._faults = faults

    def enqueue(self, document_id: str, *, priority: int = 0) -> None:
        strike(self._faults, "broker", lambda: ConnectionError(_message("broker")))
        self._inner.enqueue(document_id, priority=priority)

    def depth(self) -> int:
        fault = self._faults.find("broker")
        if fault is not None and fault.mode == "error":
            return -1
        return self._inner.depth()

    def close(self, *, wait: bool = True) -> None:
        self._inner.close(wait=wait)
