"""The embedded task runner: a bounded pool of threads in the server process.

Indexing is CPU-bound work in torch and the tokenizers, which release the GIL, so threads
keep the event loop free without a second process. Work is taken highest priority first
(:mod:`workers.fairness`), in arrival order within a priority. Transient failures are retried
with exponential backoff and jitter (tenacity); anything else is final, and the handler has
already recorded why on the document. A crash or restart loses nothing: documents still
``queued``/``parsing``/``embedding`` are re-enqueued when the server starts.

Why not ``ThreadPoolExecutor``: its queue is first in, first out, and fairness needs priorities.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable

import structlog
from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from workers.errors import TransientError

log = structlog.get_logger(__name__)

_STOP = ""  # sentinel document id: wakes a worker thread so that it can exit


class InProcessQueue:
    """A :class:`workers.queue.TaskQueue` running ``handler(document_id)`` on threads."""

    def __init__(
        self,
        handler: Callable[[str], None],
        *,
        on_give_up: Callable[[str, BaseException], None] | None = None,
        concurrency: int = 1,
        max_attempts: int = 5,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
    ) -> None:
        self._handler = handler
        self._on_give_up = on_give_up
        self._retrying = Retrying(
            retry=retry_if_exception_type(TransientError),
            stop=stop_after_attempt(max_attempts),
            wait=wait_exponential_jitter(
                multiplier=backoff_initial_s, max=backoff_max_s, jitter=backoff_initial_s
            ),
            reraise=True,
        )
        self._tasks: queue.PriorityQueue[tuple[int, int, str]] = queue.PriorityQueue()
        self._order = itertools.count()
        self._idle = threading.Condition()
        self._pending: set[str] = set()  # accepted and not finished (queued or running)
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"shoal-index-{i}", daemon=True)
            for i in range(concurrency)
        ]
        for thread in self._threads:
            thread.start()

    def enqueue(self, document_id: str, *, priority: int = 0) -> None:
        with self._idle:
            if self._closed or document_id in self._pending:
                return  # already scheduled: indexing is idempotent anyway
            self._pending.add(document_id)
        self._tasks.put((priority, next(self._order), document_id))

    def depth(self) -> int:
        with self._idle:
            return len(self._pending)

    def join(self, timeout_s: float | None = None) -> bool:
        """Wait until every accepted task has finished; False if ``timeout_s`` passed first."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._pending, timeout_s)

    def close(self, *, wait: bool = True) -> None:
        """Stop: tasks not yet started are dropped (their documents stay ``queued`` in the
        database and are re-enqueued at the next start); with ``wait``, running ones finish."""
        with self._idle:
            self._closed = True
        while True:  # drop what has not started
            try:
                _, _, document_id = self._tasks.get_nowait()
            except queue.Empty:
                break
            self._finished(document_id)
        for _ in self._threads:
            self._tasks.put((-1, next(self._order), _STOP))
        if wait:
            for thread in self._threads:
                thread.join()

    def _work(self) -> None:
        while True:
            _, _, document_id = self._tasks.get()
            if document_id == _STOP:
                return
            if self._closed:  # taken after close began: dropped like the rest
                self._finished(document_id)
                continue
            try:
                self._run(document_id)
            finally:
                self._finished(document_id)

    def _finished(self, document_id: str) -> None:
        with self._idle:
            self._pending.discard(document_id)
            self._idle.notify_all()

    def _run(self, document_id: str) -> None:
        try:
            self._retrying(self._handler, document_id)
        except TransientError as exc:
            log.error("indexing_gave_up", document_id=document_id, error=str(exc))
            if self._on_give_up is not None:
                self._on_give_up(document_id, exc)
        except Exception as exc:
            # The handler records bad input itself; this is the last line of defence for bugs.
            log.exception("indexing_task_failed", document_id=document_id)
            if self._on_give_up is not None:
                self._on_give_up(document_id, exc)
