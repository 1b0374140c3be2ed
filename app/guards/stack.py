"""The adapter stack, built from settings: fault drills innermost, guards around them."""

from __future__ import annotations

from dataclasses import dataclass

from app.guards.drills import (
    FaultyAnswerCache,
    FaultyBackend,
    FaultyCache,
    FaultyEmbedder,
    FaultyQueue,
    FaultyStore,
)
from app.guards.faults import FaultRegistry, make_fault_registry
from app.metrics import record_breaker_transition, track_breaker
from app.settings import Settings
from ingestion.embedder import ChunkEmbedder, ModelEmbedder
from retrieval.answers import AnswerCache
from retrieval.cache import EmbeddingCache
from retrieval.generation.base import GenerationBackend
from retrieval.resilience import MAX_IN_FLIGHT, Breakers, GuardedBackend, GuardedStore
from retrieval.stores.base import VectorStore
from workers.queue import TaskQueue


@dataclass(frozen=True)
class Guarded:
    """The adapters that resilience wraps: the store behind its breaker and timeouts, and, with
    ``SHOAL_ENABLE_FAULTS``, everything behind the fault registry."""

    store: GuardedStore
    model: ChunkEmbedder
    cache: EmbeddingCache
    answers: AnswerCache
    breakers: Breakers
    faults: FaultRegistry | None

    def backend(self, generator: str, index: int, backend: GenerationBackend) -> GenerationBackend:
        """Endpoint ``index`` of ``generator`` behind its own breaker (a RouteCatalog wrap)."""
        if self.faults is not None:
            backend = FaultyBackend(backend, self.faults)
        breaker = self.breakers.get(f"generator:{generator}:{index}")
        track_breaker(breaker.name, lambda: breaker.state)
        return GuardedBackend(backend, breaker)

    def queue(self, queue: TaskQueue) -> TaskQueue:
        return queue if self.faults is None else FaultyQueue(queue, self.faults)


def guard(
    settings: Settings,
    *,
    store: VectorStore,
    model: ModelEmbedder,
    cache: EmbeddingCache,
    answers: AnswerCache,
) -> Guarded:
    """Wrap the real adapters: fault injection innermost (so breakers see drills as outages),
    then the store's breaker and timeouts."""
    faults = (
        make_fault_registry(settings.redis_url, settings.cache) if settings.enable_faults else None
    )
    breakers = Breakers(settings.breaker, on_transition=record_breaker_transition)
    store_breaker = breakers.get("vector_store")
    track_breaker(store_breaker.name, lambda: store_breaker.state)
    embedder: ChunkEmbedder = model
    if faults is not None:
        store = FaultyStore(store, faults)
        embedder = FaultyEmbedder(model, faults)
        cache = FaultyCache(cache, faults)
        answers = FaultyAnswerCache(answers, faults)
    guarded_store = GuardedStore(
        store,
        store_breaker,
        read_timeout_s=settings.store_timeout_s,
        write_timeout_s=settings.store_write_timeout_s,
        # Room for every indexing thread and AnyIO's 40 request threads; only stalled calls
        # fill it (then calls fail at once instead of queueing behind them).
        max_in_flight=max(MAX_IN_FLIGHT, settings.workers.concurrency + 64),
    )
    return Guarded(guarded_store, embedder, cache, answers, breakers, faults)
