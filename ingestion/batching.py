"""One model, many documents: coalesce concurrent encode calls into full batches.

Indexing threads each parse, chunk and write one document at a time; a document has a handful
of chunks, too few for an efficient forward pass. :class:`BatchingEmbedder` has the same
interface as the embedder it wraps, but its :meth:`~BatchingEmbedder.encode` hands the texts to
one encoding thread, which waits a moment for other threads' texts and encodes them together.
So the model always runs on full batches (sorted by length by sentence-transformers), while
other threads parse, chunk and upsert the next documents: a pipeline rather than parse-all then
embed-all. Only one forward pass runs at a time, so more indexing threads never fight over the
cores the model uses.

Why not a library: the micro-batching servers (Triton, TorchServe, Ray Serve) are services of
their own; what is needed here is one thread and a queue in the worker process.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ingestion.embedder import ChunkEmbedder


@dataclass
class _Request:
    texts: Sequence[str]
    token_counts: Sequence[int] | None
    result: Future[npt.NDArray[np.float32]]


class BatchingEmbedder:
    """Wraps an :class:`ChunkEmbedder`; thread-safe; same results, encoded in shared batches."""

    def __init__(self, embedder: ChunkEmbedder, *, max_batch: int = 64, max_wait_s: float = 0.0):
        self._embedder = embedder
        self._max_batch = max_batch
        self._max_wait_s = max_wait_s
        self._requests: queue.Queue[_Request | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    @property
    def model_id(self) -> str:
        return self._embedder.model_id

    @property
    def dimension(self) -> int:
        return self._embedder.dimension

    @property
    def max_seq_length(self) -> int:
        return self._embedder.max_seq_length

    def count_tokens(self, text: str) -> int:
        return self._embedder.count_tokens(text)

    def encode(
        self, texts: Sequence[str], *, token_counts: Sequence[int] | None = None
    ) -> npt.NDArray[np.float32]:
        """As the wrapped embedder's ``encode``; blocks until this call's rows are ready."""
        if not texts:
            return self._embedder.encode(texts)
        self._ensure_started()
        request = _Request(texts, token_counts, Future())
        self._requests.put(request)
        return request.result.result()

    def close(self) -> None:
        """Stop the encoding thread once the requests already queued are served."""
        with self._start_lock:
            if self._thread is not None:
                self._requests.put(None)
                self._thread.join()
                self._thread = None

    def _ensure_started(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._serve, name="shoal-encode", daemon=True
                )
                self._thread.start()

    def _serve(self) -> None:
        batch: list[_Request] = []
        try:
            while True:
                first = self._requests.get()
                if first is None:
                    return
                batch, stop = self._gather(first)
                self._encode(batch)
                batch = []
                if stop:
                    return
        except BaseException as exc:
            # Never leave a caller waiting on a thread that is gone: fail what it held and
            # what is queued, and let the next call start a new thread.
            for request in batch:
                if not request.result.done():
                    request.result.set_exception(exc)
            self._fail_queued(exc)
            if self._thread is threading.current_thread():  # no lock: close() may hold it
                self._thread = None
            raise

    def _fail_queued(self, exc: BaseException) -> None:
        while True:
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                return
            if request is not None:
                request.result.set_exception(exc)

    def _gather(self, first: _Request) -> tuple[list[_Request], bool]:
        """``first`` plus whatever else is queued (or arrives within ``max_wait_s``), until the
        batch holds ``max_batch`` texts.

        No wait by default: requests pile up while the model encodes the previous batch, so
        under load batches fill by themselves, and a lone document is never held back.
        """
        batch, size = [first], len(first.texts)
        while size < self._max_batch:
            try:
                more = (
                    self._requests.get(timeout=self._max_wait_s)
                    if self._max_wait_s > 0
                    else self._requests.get_nowait()
                )
            except queue.Empty:
                break
            if more is None:
                return batch, True
            batch.append(more)
            size += len(more.texts)
        return batch, False

    def _encode(self, batch: list[_Request]) -> None:
        texts = [t for r in batch for t in r.texts]
        counts: list[int] | None = None
        if all(r.token_counts is not None for r in batch):
            counts = [c for r in batch for c in r.token_counts or ()]
        try:
            vectors = self._embedder.encode(texts, token_counts=counts)
        except Exception as exc:
            # One bad text must not fail its neighbours: retry each request on its own.
            if len(batch) == 1:
                batch[0].result.set_exception(exc)
                return
            for request in batch:
                self._encode([request])
            return
        offset = 0
        for request in batch:
            n = len(request.texts)
            request.result.set_result(vectors[offset : offset + n])
            offset += n
