"""The VectorStore contract on :class:`~retrieval.resilience.GuardedStore` around the embedded
store: the breaker, its pool and its timeouts change no answer.

The contract's tests are imported from :mod:`tests.contracts.test_vector_store` and run here,
where the ``store`` and ``persistent_engine`` fixtures open guarded stores instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from retrieval.config import BreakerConfig
from retrieval.resilience import CircuitBreaker, GuardedStore
from retrieval.stores import EdgeStore, VectorStore
from tests.contracts.test_vector_store import *  # noqa: F403 (the contract's tests run here)
from tests.contracts.test_vector_store import Engine


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
