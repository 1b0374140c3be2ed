"""The embedded task runner: a bounded thread pool in the server process.

Indexing is CPU-bound work in torch and the tokenizers, which release the GIL, so threads
keep the event loop free without a second process. Transient failures are retried with
exponential backoff and jitter (tenacity); anything else is final, and the handler has
already recorded why on the document. A crash or restart loses nothing: documents still
``queued``/``parsing``/``embedding`` are re-enqueued when the server starts.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import structlog
from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from workers.errors import TransientError

log = structlog.get_logger(__name__)


class InProcessQueue:
    """A :class:`workers.queue.TaskQueue` running ``handler(document_id)`` on a thread pool."""

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
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="shoal-index")
        self._retrying = Retrying(
            retry=retry_if_exception_type(TransientError),
            stop=stop_after_attempt(max_attempts),
            wait=wait_exponential_jitter(
                multiplier=backoff_initial_s, max=backoff_max_s, jitter=backoff_initial_s
            ),
            reraise=True,
        )
        self._lock = threading.Lock()
        self._pending: dict[str, Future[None]] = {}

    def enqueue(self, document_id: str) -> None:
        with self._lock:
            if document_id in self._pending:  # already scheduled: indexing is idempotent anyway
                return
            future = self._pool.submit(self._run, document_id)
            self._pending[document_id] = future
        future.add_done_callback(lambda _f: self._done(document_id))

    def depth(self) -> int:
        with self._lock:
            return len(self._pending)

    def join(self, timeout_s: float | None = None) -> bool:
        """Wait until every accepted task has finished; False if ``timeout_s`` passed first."""
        done = threading.Event()

        def watch() -> None:
            while True:
                with self._lock:
                    futures = list(self._pending.values())
                if not futures:
                    done.set()
                    return
                for future in futures:
                    future.exception()

        threading.Thread(target=watch, daemon=True).start()
        return done.wait(timeout_s)

    def close(self, *, wait: bool = True) -> None:
        """Stop: tasks not yet started are dropped (their documents stay ``queued`` in the
        database and are re-enqueued at the next start); with ``wait``, running ones finish."""
        self._pool.shutdown(wait=wait, cancel_futures=True)

    def _done(self, document_id: str) -> None:
        with self._lock:
            self._pending.pop(document_id, None)

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
