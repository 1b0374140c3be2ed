"""The batching embedder: shared forward passes, the same vectors, one bad text fails alone."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import numpy.typing as npt
import pytest

from ingestion.batching import BatchingEmbedder
from ingestion.embedder import ModelEmbedder

pytestmark = pytest.mark.slow

DOCUMENTS = [
    [f"Document {d}, sentence {s}: the {d * 7 + s}th fact about tidal pools." for s in range(d % 4)]
    for d in range(12)
]


class CountingEmbedder:
    """The real model, counting the encode calls (forward passes) it is asked for."""

    def __init__(self, inner: ModelEmbedder) -> None:
        self.inner = inner
        self.batches: list[int] = []
        self._lock = threading.Lock()

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
        with self._lock:
            self.batches.append(len(texts))
        return self.inner.encode(texts, token_counts=token_counts)


@pytest.fixture
def counting(embedder: ModelEmbedder) -> CountingEmbedder:
    return CountingEmbedder(embedder)


@pytest.fixture
def batching(counting: CountingEmbedder) -> Iterator[BatchingEmbedder]:
    # A generous wait, so that threads released together surely share a batch on a busy CI.
    batcher = BatchingEmbedder(counting, max_batch=64, max_wait_s=0.2)
    yield batcher
    batcher.close()


def encode_together(
    batcher: BatchingEmbedder, requests: Sequence[Sequence[str]]
) -> list[npt.NDArray[np.float32] | BaseException]:
    """Each request from its own thread, all released at once; a result or the exception."""
    start = threading.Barrier(len(requests))

    def one(texts: Sequence[str]) -> npt.NDArray[np.float32] | BaseException:
        start.wait()
        try:
            return batcher.encode(texts)
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(max_workers=len(requests)) as pool:
        return list(pool.map(one, requests))


def test_concurrent_documents_share_forward_passes_and_get_their_own_vectors(
    batching: BatchingEmbedder, counting: CountingEmbedder, embedder: ModelEmbedder
) -> None:
    results = encode_together(batching, DOCUMENTS)
    for texts, vectors in zip(DOCUMENTS, results, strict=True):
        assert isinstance(vectors, np.ndarray)
        assert vectors.shape == (len(texts), 384)
        if texts:
            np.testing.assert_allclose(vectors, embedder.encode(texts), atol=1e-5)
    non_empty = sum(1 for texts in DOCUMENTS if texts)
    assert len(counting.batches) < non_empty  # coalesced, not one pass per document
    assert sum(counting.batches) == sum(len(texts) for texts in DOCUMENTS)


def test_a_batch_never_grows_past_max_batch_plus_one_request(counting: CountingEmbedder) -> None:
    batcher = BatchingEmbedder(counting, max_batch=4, max_wait_s=0.2)
    try:
        results = encode_together(batcher, [["a b c"] * 3 for _ in range(6)])
    finally:
        batcher.close()
    assert all(isinstance(r, np.ndarray) and r.shape == (3, 384) for r in results)
    assert max(counting.batches) <= 4 + 2  # stops gathering once the size reaches max_batch


def test_one_overlong_text_fails_its_own_request_only(
    batching: BatchingEmbedder, embedder: ModelEmbedder
) -> None:
    overlong = "word " * 400  # 402 tokens: MiniLM reads 256
    requests = [["a fine sentence"], [overlong], ["another fine sentence", "and one more"]]
    good_first, bad, good_last = encode_together(batching, requests)
    assert isinstance(bad, ValueError)
    assert "402 tokens" in str(bad)
    assert isinstance(good_first, np.ndarray)
    assert isinstance(good_last, np.ndarray)
    np.testing.assert_allclose(good_last, embedder.encode(requests[2]), atol=1e-5)


def test_closing_serves_what_was_queued_and_a_later_call_starts_again(
    batching: BatchingEmbedder, embedder: ModelEmbedder
) -> None:
    assert batching.encode(["before closing"]).shape == (1, 384)
    batching.close()
    np.testing.assert_allclose(
        batching.encode(["after closing"]), embedder.encode(["after closing"]), atol=1e-5
    )


def test_nothing_to_encode_returns_an_empty_matrix_at_once(batching: BatchingEmbedder) -> None:
    assert batching.encode([]).shape == (0, 384)
