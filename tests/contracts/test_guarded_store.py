"""The VectorStore contract on :class:`~retrieval.resilience.GuardedStore` around the embedded
store: the breaker, its pool and its timeouts change no answer.

The contract's tests are imported from :mod:`tests.contracts.test_vector_store` and run here,
where the ``store`` and ``persistent_engine`` fixtures open guarded stores instead. Below them,
what the breaker makes of each engine's real errors.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from retrieval.config import BreakerConfig
from retrieval.errors import StoreRequestError, StoreUnavailableError
from retrieval.resilience import CircuitBreaker, GuardedStore
from retrieval.stores import EdgeStore, VectorStore
from retrieval.stores.base import SearchRequest
from tests.contracts.test_vector_store import *  # noqa: F403 (the contract's tests run here)
from tests.contracts.test_vector_store import (
    COLLECTION,
    DIM,
    ENGINES,
    SPEC,
    Engine,
    make_points,
    unit_vectors,
)


def _guarded(tmp_path: Path) -> Engine:
    def open_store() -> VectorStore:
        breaker = CircuitBreaker("contract", BreakerConfig())
        return GuardedStore(
            EdgeStore(tmp_path / "qdrant"), breaker, read_timeout_s=30, write_timeout_s=30
        )

    return Engine(open=open_store)


@pytest.fixture  # type: ignore[no-redef]  # replaces the contract's fixture
def store(tmp_path: Path) -> Iterator[VectorStore]:
    opened = _guarded(tmp_path).open()
    yield opened
    opened.close()


@pytest.fixture  # type: ignore[no-redef]  # replaces the contract's fixture
def persistent_engine(tmp_path: Path) -> Engine:
    return _guarded(tmp_path)


@pytest.mark.parametrize("engine", ["edge", "server-in-memory"])
def test_refused_requests_never_open_the_breaker_and_outages_still_do(
    engine: str, tmp_path: Path
) -> None:
    inner = ENGINES[engine](tmp_path).open()
    breaker = CircuitBreaker("vector_store", BreakerConfig(failure_threshold=2))
    guarded = GuardedStore(inner, breaker, read_timeout_s=30, write_timeout_s=30)
    guarded.ensure_collection(COLLECTION, SPEC)
    guarded.upsert(COLLECTION, make_points(unit_vectors(3)))
    wrong_dimension = SearchRequest([1.0] * (DIM + 1), where={}, limit=3)

    for _ in range(5):  # Edge's message or local mode's ValueError: the store answered
        with pytest.raises(StoreRequestError):
            guarded.search(COLLECTION, wrong_dimension)
    assert guarded.breaker.state == "closed"
    assert len(guarded.search(COLLECTION, SearchRequest([1.0] * DIM, where={}, limit=3))) == 3

    inner.close()  # a real outage under the same breaker: two failures open it
    for _ in range(2):
        with pytest.raises(StoreUnavailableError, match="closed"):
            guarded.count(COLLECTION, where={})
    assert breaker.state == "open"
    guarded.close()
