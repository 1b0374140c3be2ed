"""Circuit breakers and timeouts around the read path's dependencies.

A :class:`CircuitBreaker` guards one dependency: the vector store, or one endpoint of a
generation backend. It is *closed* while calls succeed; it *opens* after ``failure_threshold``
consecutive failures, or when at least ``failure_rate`` of the last ``min_calls`` calls failed;
while open every call is refused at once; after ``reset_s`` it turns *half-open* and lets
``half_open_probes`` calls through: that many successes close it, one failure opens it again.

:class:`GuardedStore` puts every :class:`~retrieval.stores.base.VectorStore` call behind a
breaker and a timeout. The engines' calls are synchronous, so a stalled store would hold its
caller's thread for as long as it stalls: each call runs in a bounded pool instead and the
caller waits at most its timeout (``store_timeout_s`` for reads, ``store_write_timeout_s`` for
writes), then gets :class:`~retrieval.errors.StoreUnavailableError`. A stalled call keeps its
pool thread until the engine returns; past :data:`MAX_IN_FLIGHT` such calls, new ones fail at
once instead of queueing behind them.

:class:`GuardedBackend` puts a generation backend behind a breaker: while it is open the
backend raises :class:`~retrieval.errors.GenerationUnavailableError` at once, so the dispatcher
moves on to the next endpoint or route without waiting. Backends bound their own calls (the
OpenAI-compatible client's ``timeout_s``, per call and per streamed gap).

Why not the ``circuitbreaker`` package (2.1.3, the maintained one): it counts failures since
the last success only (no failure rate over a minimum number of calls), keeps its counters without
a lock (our callers are threads), lets every call through while half-open instead of a bounded
number of probes, and has no hook for transitions, which are metrics here. Those are the
eighty lines of :class:`CircuitBreaker`.
"""

from __future__ import annotations

import contextvars
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Literal, TypeVar

import structlog

from retrieval.config import BreakerConfig
from retrieval.errors import GenerationUnavailableError, StoreUnavailableError
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

log = structlog.get_logger(__name__)

BreakerState = Literal["closed", "open", "half_open"]
TransitionListener = Callable[[str, BreakerState, BreakerState], None]
"""Called with ``(breaker name, from, to)`` on every transition, under the breaker's lock."""

# Calls of one store in flight at once: indexing threads (32 by default) and request threads
# (AnyIO's 40) together stay under it in normal operation; only stalled calls fill it.
MAX_IN_FLIGHT = 96
_T = TypeVar("_T")


class CircuitOpenError(Exception):
    """Raised by :meth:`CircuitBreaker.acquire` when the breaker refuses a call."""

    def __init__(self, name: str, retry_after_s: float) -> None:
        super().__init__(f"circuit {name!r} is open; retry in {retry_after_s:.1f} s")
        self.name = name
        self.retry_after_s = retry_after_s


class CircuitBreaker:
    """A thread-safe circuit breaker (see the module docstring for the states).

    A caller takes a ticket with :meth:`acquire`, makes its call, and reports the outcome with
    :meth:`record`. A ticket names the state it was issued in: outcomes of calls that began
    before a transition are ignored, so a slow success from before the breaker opened cannot
    close it, and a late failure cannot open it again after it closed.
    """

    def __init__(
        self,
        name: str,
        config: BreakerConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_transition: TransitionListener | None = None,
    ) -> None:
        self.name = name
        self._config = config
        self._clock = clock
        self._on_transition = on_transition
        self._lock = threading.Lock()
        self._state: BreakerState = "closed"
        self._ticket = 0  # bumped on every transition
        self._opened_at = 0.0
        self._consecutive = 0
        self._outcomes: deque[bool] = deque(maxlen=config.min_calls)  # True: a failure
        self._probes = 0  # half-open calls in flight
        self._successes = 0  # half-open calls that succeeded

    @property
    def state(self) -> BreakerState:
        """The state now (an open breaker whose reset period is over reads half-open)."""
        with self._lock:
            self._advance()
            return self._state

    def retry_after_s(self) -> float:
        """Seconds until an open breaker lets a probe through; 0 when it is not open."""
        with self._lock:
            self._advance()
            return self._remaining() if self._state == "open" else 0.0

    def acquire(self) -> int:
        """Admit one call; returns its ticket for :meth:`record`.

        Raises:
            CircuitOpenError: the breaker is open, or half-open with every probe taken.
        """
        with self._lock:
            self._advance()
            if self._state == "open":
                raise CircuitOpenError(self.name, self._remaining())
            if self._state == "half_open":
                if self._probes >= self._config.half_open_probes:
                    raise CircuitOpenError(self.name, 1.0)
                self._probes += 1
            return self._ticket

    def record(self, ticket: int, success: bool | None) -> None:
        """Report the outcome of the call ``ticket`` admitted.

        ``success`` is None when the outcome says nothing about the dependency (the caller
        went away): a half-open probe slot is freed and nothing is counted.
        """
        with self._lock:
            if ticket != self._ticket:
                return
            if self._state == "half_open":
                self._probes -= 1
                if success is False:
                    self._transition("open")
                elif success:
                    self._successes += 1
                    if self._successes >= self._config.half_open_probes:
                        self._transition("closed")
            elif self._state == "closed" and success is not None:
                failed = not success
                self._outcomes.append(failed)
                self._consecutive = self._consecutive + 1 if failed else 0
                if failed and self._should_open():
                    self._transition("open")

    def _should_open(self) -> bool:
        if self._consecutive >= self._config.failure_threshold:
            return True
        window = self._outcomes
        return (
            len(window) == window.maxlen and sum(window) / len(window) >= self._config.failure_rate
        )

    def _remaining(self) -> float:
        return max(0.0, self._opened_at + self._config.reset_s - self._clock())

    def _advance(self) -> None:
        if self._state == "open" and self._remaining() <= 0:
            self._transition("half_open")

    def _transition(self, to: BreakerState) -> None:
        before, self._state = self._state, to
        self._ticket += 1
        self._probes = self._successes = self._consecutive = 0
        self._outcomes.clear()
        if to == "open":
            self._opened_at = self._clock()
        log.warning("breaker_transition", breaker=self.name, **{"from": before, "to": to})
        if self._on_transition is not None:
            self._on_transition(self.name, before, to)


class Breakers:
    """The process's breakers by name, made on first use with one config and listener."""

    def __init__(
        self, config: BreakerConfig, *, on_transition: TransitionListener | None = None
    ) -> None:
        self.config = config
        self._on_transition = on_transition
        self._breakers: dict[str, CircuitBreaker] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> CircuitBreaker:
        with self._lock:
            breaker = self._breakers.get(name)
            if breaker is None:
                breaker = CircuitBreaker(name, self.config, on_transition=self._on_transition)
                self._breakers[name] = breaker
            return breaker

    def states(self) -> dict[str, BreakerState]:
        """Every breaker made so far, by name, with its state now."""
        with self._lock:
            breakers = sorted(self._breakers.items())
        return {name: breaker.state for name, breaker in breakers}


class GuardedStore:
    """A :class:`~retrieval.stores.base.VectorStore` whose calls pass a breaker and a timeout.

    Every method raises :class:`StoreUnavailableError` at once while the breaker is open, and
    when the wrapped store fails or does not answer within the timeout; its ``retry_after_s``
    says how long the breaker stays open (1 s while it is still closed). Other errors pass
    through and count as successes, because the store answered: above all
    :class:`~retrieval.errors.StoreRequestError`, a request the store refused (a bug, or data at
    odds with the deployment), which must never open the breaker for every other caller.
    """

    def __init__(
        self,
        store: VectorStore,
        breaker: CircuitBreaker,
        *,
        read_timeout_s: float,
        write_timeout_s: float,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self._store = store
        self.breaker = breaker
        self._read_timeout_s = read_timeout_s
        self._write_timeout_s = write_timeout_s
        self._executor = ThreadPoolExecutor(max_in_flight, thread_name_prefix="shoal-store")
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._max_in_flight = max_in_flight

    def check_open(self) -> None:
        """Raise :class:`StoreUnavailableError` now if the breaker would refuse a call.

        Lets a query skip the work that precedes its search (embedding the question) when the
        search cannot happen. Takes no half-open probe.
        """
        if self.breaker.state == "open":
            raise self._refused(self.breaker.retry_after_s())

    def ensure_collection(self, name: str, spec: CollectionSpec) -> None:
        self._call(
            "collection creation", lambda: self._store.ensure_collection(name, spec), write=True
        )

    def drop_collection(self, name: str) -> None:
        self._call("collection drop", lambda: self._store.drop_collection(name), write=True)

    def upsert(self, name: str, points: Sequence[Point]) -> None:
        self._call("upsert", lambda: self._store.upsert(name, points), write=True)

    def search(self, name: str, request: SearchRequest) -> list[Hit]:
        return self._call("search", lambda: self._store.search(name, request), write=False)

    def delete(self, name: str, *, where: Where) -> None:
        self._call("delete", lambda: self._store.delete(name, where=where), write=True)

    def count(self, name: str, *, where: Where, filter: Expr | None = None) -> int:
        return self._call(
            "count", lambda: self._store.count(name, where=where, filter=filter), write=False
        )

    def ping(self) -> None:
        self._call("ping", self._store.ping, write=False)

    def close(self) -> None:
        # Stalled calls may never return: do not wait for them.
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._store.close()

    def _call(self, action: str, operation: Callable[[], _T], *, write: bool) -> _T:
        try:
            ticket = self.breaker.acquire()
        except CircuitOpenError as exc:
            raise self._refused(exc.retry_after_s) from exc
        if not self._slots.acquire(blocking=False):
            self.breaker.record(ticket, None)
            raise StoreUnavailableError(
                f"vector store saturated: {self._max_in_flight} calls in flight",
                retry_after_s=1.0,
            )
        # The caller's context (request id, cache scope) follows the call into the pool.
        context = contextvars.copy_context()
        try:
            future = self._executor.submit(context.run, operation)
        except RuntimeError as exc:  # shut down
            self._slots.release()
            self.breaker.record(ticket, None)
            raise StoreUnavailableError("the vector store is closed") from exc
        future.add_done_callback(lambda _: self._slots.release())
        timeout_s = self._write_timeout_s if write else self._read_timeout_s
        done, _ = wait([future], timeout=timeout_s)
        if not done:
            future.cancel()  # if it has not started; a running call finishes in the pool
            self.breaker.record(ticket, False)
            raise StoreUnavailableError(
                f"the vector store did not answer a {action} within {timeout_s:g} s",
                retry_after_s=self._retry_after_s(),
            )
        try:
            result = future.result()
        except StoreUnavailableError as exc:
            self.breaker.record(ticket, False)
            raise StoreUnavailableError(str(exc), retry_after_s=self._retry_after_s()) from exc
        except BaseException:  # StoreRequestError above all: the store answered, with a refusal
            self.breaker.record(ticket, True)
            raise
        self.breaker.record(ticket, True)
        return result

    def _refused(self, retry_after_s: float) -> StoreUnavailableError:
        return StoreUnavailableError(
            f"the vector store's circuit breaker is open (too many failures); "
            f"retry in {math.ceil(retry_after_s)} s",
            retry_after_s=retry_after_s,
        )

    def _retry_after_s(self) -> float:
        return max(1.0, self.breaker.retry_after_s())


class GuardedBackend:
    """A generation backend behind its own breaker (see the module docstring)."""

    def __init__(self, backend: GenerationBackend, breaker: CircuitBreaker) -> None:
        self._backend = backend
        self.breaker = breaker

    @property
    def name(self) -> str:
        return self._backend.name

    def generate(
        self,
        question: str,
        question_vector: Sequence[float],
        passages: Sequence[Passage],
        *,
        options: GenerationOptions = DEFAULT_OPTIONS,
    ) -> Answer:
        ticket = self._admit()
        success: bool | None = None
        try:
            answer = self._backend.generate(question, question_vector, passages, options=options)
            success = True
        except GenerationUnavailableError:
            success = False
            raise
        finally:
            self.breaker.record(ticket, success)
        return answer

    def stream(
        self,
        question: str,
        question_vector: Sequence[float],
        passages: Sequence[Passage],
        *,
        options: GenerationOptions = DEFAULT_OPTIONS,
    ) -> Iterator[StreamEvent]:
        ticket = self._admit()
        success: bool | None = None  # stays None if the consumer stops early
        try:
            yield from self._backend.stream(question, question_vector, passages, options=options)
            success = True
        except GenerationUnavailableError:
            success = False
            raise
        finally:
            self.breaker.record(ticket, success)

    def _admit(self) -> int:
        try:
            return self.breaker.acquire()
        except CircuitOpenError as exc:
            raise GenerationUnavailableError(
                f"circuit breaker {self.breaker.name!r} is open; retry in "
                f"{math.ceil(exc.retry_after_s)} s",
                backend=self._backend.name,
            ) from exc
