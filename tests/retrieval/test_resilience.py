"""Circuit breakers: closed → open (consecutive failures, or a failure rate over a minimum of
calls) → half-open probes → closed; the store's timeouts; backends behind their breakers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from retrieval.config import BreakerConfig
from retrieval.errors import GenerationUnavailableError, StoreUnavailableError
from retrieval.generation.base import (
    DEFAULT_OPTIONS,
    Answer,
    Delta,
    GenerationOptions,
    Passage,
    StreamEvent,
)
from retrieval.generation.endpoints import EndpointPool
from retrieval.generation.routing import Dispatcher
from retrieval.resilience import (
    BreakerState,
    CircuitBreaker,
    CircuitOpenError,
    GuardedBackend,
    GuardedStore,
)
from retrieval.stores.base import CollectionSpec, Hit, Point, SearchRequest, VectorStore, Where
from retrieval.stores.edge import EdgeStore

CONFIG = BreakerConfig(reset_s=10, failure_threshold=3, failure_rate=0.5, min_calls=6)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


Transition = tuple[str, BreakerState, BreakerState]


def breaker(
    config: BreakerConfig = CONFIG, clock: Clock | None = None
) -> tuple[CircuitBreaker, list[Transition]]:
    seen: list[Transition] = []
    made = CircuitBreaker(
        "test",
        config,
        clock=clock or Clock(),
        on_transition=lambda *t: seen.append(t),
    )
    return made, seen


def state(b: CircuitBreaker) -> BreakerState:
    return b.state  # through a call: mypy would narrow the property from one assert to the next


def calls(b: CircuitBreaker, *outcomes: bool) -> None:
    for success in outcomes:
        b.record(b.acquire(), success)


def test_consecutive_failures_open_the_breaker() -> None:
    b, seen = breaker()
    calls(b, False, False, True, False, False)  # a success resets the run
    assert state(b) == "closed"
    calls(b, False)
    assert state(b) == "open"
    assert seen == [("test", "closed", "open")]
    with pytest.raises(CircuitOpenError) as refused:
        b.acquire()
    assert refused.value.retry_after_s == pytest.approx(10)


def test_a_failure_rate_over_the_minimum_of_calls_opens_the_breaker() -> None:
    b, _ = breaker()
    # Never three failures in a row; half of the last six calls fail once six are seen.
    calls(b, False, True, False, True, False)
    assert state(b) == "closed"  # five calls: under the minimum, the rate does not count yet
    calls(b, True)
    assert state(b) == "closed"  # 3 of 6 failed, but the last call succeeded: nothing to judge
    calls(b, False)
    assert state(b) == "open"  # the last six: 3 failures of 6


def test_after_the_reset_period_probes_close_a_healthy_breaker() -> None:
    clock = Clock()
    b, seen = breaker(CONFIG.model_copy(update={"half_open_probes": 2}), clock)
    calls(b, False, False, False)
    clock.now += 9.5
    assert state(b) == "open"
    assert b.retry_after_s() == pytest.approx(0.5)
    clock.now += 0.5
    assert state(b) == "half_open"
    first, second = b.acquire(), b.acquire()
    with pytest.raises(CircuitOpenError):
        b.acquire()  # both probes are out
    b.record(first, True)
    assert state(b) == "half_open"
    b.record(second, True)
    assert state(b) == "closed"
    assert [(f, t) for _, f, t in seen] == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]


def test_a_failed_probe_opens_the_breaker_again() -> None:
    clock = Clock()
    b, _ = breaker(clock=clock)
    calls(b, False, False, False)
    clock.now += 10
    probe = b.acquire()
    b.record(probe, False)
    assert state(b) == "open"
    assert b.retry_after_s() == pytest.approx(10)


def test_an_abandoned_probe_frees_its_slot() -> None:
    clock = Clock()
    b, _ = breaker(clock=clock)
    calls(b, False, False, False)
    clock.now += 10
    b.record(b.acquire(), None)  # the caller went away: says nothing about the dependency
    assert state(b) == "half_open"
    b.record(b.acquire(), True)
    assert state(b) == "closed"


def test_outcomes_of_calls_from_before_a_transition_are_ignored() -> None:
    clock = Clock()
    b, _ = breaker(clock=clock)
    slow = b.acquire()  # a call that began while closed ...
    calls(b, False, False, False)
    clock.now += 10
    b.record(slow, True)  # ... and succeeded late must not close the half-open breaker
    assert state(b) == "half_open"


# --- the vector store -------------------------------------------------------------------------


class Flaky:
    """The real embedded store behind a switch: calls fail, stall until released, or pass."""

    def __init__(self, store: VectorStore) -> None:
        self.inner = store
        self.mode = "pass"
        self.release = threading.Event()
        self.calls = 0

    def _enter(self) -> None:
        self.calls += 1
        if self.mode == "fail":
            raise StoreUnavailableError("down")
        if self.mode == "stall":
            self.release.wait(30)

    def ensure_collection(self, name: str, spec: CollectionSpec) -> None:
        self._enter()
        self.inner.ensure_collection(name, spec)

    def drop_collection(self, name: str) -> None:
        self._enter()
        self.inner.drop_collection(name)

    def upsert(self, name: str, points: Sequence[Point]) -> None:
        self._enter()
        self.inner.upsert(name, points)

    def search(self, name: str, request: SearchRequest) -> list[Hit]:
        self._enter()
        return self.inner.search(name, request)

    def delete(self, name: str, *, where: Where) -> None:
        self._enter()
        self.inner.delete(name, where=where)

    def count(self, name: str, *, where: Where, filter: object = None) -> int:
        self._enter()
        return self.inner.count(name, where=where)

    def ping(self) -> None:
        self._enter()
        self.inner.ping()

    def check_open(self) -> None:
        self.inner.check_open()

    def close(self) -> None:
        self.release.set()
        self.inner.close()


@pytest.fixture
def flaky(tmp_path: Path) -> Iterator[Flaky]:
    store = Flaky(EdgeStore(tmp_path / "qdrant"))
    yield store
    store.release.set()


def guarded(flaky: Flaky, **config: float) -> GuardedStore:
    b = CircuitBreaker("vector_store", CONFIG.model_copy(update=config))
    return GuardedStore(flaky, b, read_timeout_s=0.2, write_timeout_s=10)


def test_a_stalled_store_holds_a_search_no_longer_than_the_timeout(flaky: Flaky) -> None:
    store = guarded(flaky)
    store.ensure_collection("c", CollectionSpec(dimension=3))
    flaky.mode = "stall"
    started = time.perf_counter()
    with pytest.raises(StoreUnavailableError, match=r"did not answer a search within 0\.2 s"):
        store.search("c", SearchRequest([1.0, 0.0, 0.0], limit=3))
    waited = time.perf_counter() - started
    assert waited < 2  # 0.2 s plus scheduling; generous for a loaded machine
    flaky.release.set()
    store.close()


def test_failures_open_the_store_breaker_and_then_calls_fail_at_once(flaky: Flaky) -> None:
    store = guarded(flaky)
    flaky.mode = "fail"
    for _ in range(3):
        with pytest.raises(StoreUnavailableError, match="down"):
            store.ping()
    assert store.breaker.state == "open"
    calls_before = flaky.calls
    with pytest.raises(StoreUnavailableError, match="circuit breaker is open") as refused:
        store.search("c", SearchRequest([1.0, 0.0, 0.0], limit=3))
    assert flaky.calls == calls_before  # the store was not even asked
    assert refused.value.retry_after_s == pytest.approx(10, abs=1)
    with pytest.raises(StoreUnavailableError):
        store.check_open()
    store.close()


def test_a_stalled_store_opens_the_breaker_by_timeouts(flaky: Flaky) -> None:
    store = guarded(flaky)
    flaky.mode = "stall"
    for _ in range(3):
        with pytest.raises(StoreUnavailableError, match="did not"):
            store.ping()
    assert store.breaker.state == "open"
    store.close()


def test_errors_that_are_not_outages_pass_through_and_count_as_answers(flaky: Flaky) -> None:
    store = guarded(flaky)
    for _ in range(5):
        with pytest.raises(ValueError, match="invalid collection name"):
            store.ensure_collection("no/slashes", CollectionSpec(dimension=3))
    assert store.breaker.state == "closed"
    store.close()


# --- generation backends ---------------------------------------------------------------------


class Scripted:
    """A backend that fails while ``failing`` is set, else answers its name."""

    def __init__(self, name: str) -> None:
        self._name = name
        self.failing = True
        self.calls = 0

    @property
    def name(self) -> str:
        return self._name

    def generate(
        self,
        question: str,
        question_vector: Sequence[float],
        passages: Sequence[Passage],
        *,
        options: GenerationOptions = DEFAULT_OPTIONS,
    ) -> Answer:
        self.calls += 1
        if self.failing:
            raise GenerationUnavailableError("refused", backend=self._name, status_code=503)
        return Answer(self._name, True, [])

    def stream(
        self,
        question: str,
        question_vector: Sequence[float],
        passages: Sequence[Passage],
        *,
        options: GenerationOptions = DEFAULT_OPTIONS,
    ) -> Iterator[StreamEvent]:
        answer = self.generate(question, question_vector, passages)
        yield Delta(answer.text)
        yield answer


def test_an_open_generation_breaker_sends_the_dispatcher_to_the_fallback_at_once() -> None:
    clock = Clock()
    llm = Scripted("llm")
    guarded_llm = GuardedBackend(llm, CircuitBreaker("generator:llm:0", CONFIG, clock=clock))
    fallback = Scripted("extractive")
    fallback.failing = False
    dispatcher = Dispatcher(
        small=EndpointPool([(guarded_llm, 1.0)]), large=None, extractive=fallback
    )

    for _ in range(3):
        _, choice = dispatcher.answer(dispatcher.plan("q", [], "small"), [])
        assert choice.name == "extractive"
    assert llm.calls == 3
    answer, choice = dispatcher.answer(dispatcher.plan("q", [], "small"), [])
    assert llm.calls == 3  # skipped: the breaker is open
    assert answer.text == "extractive"
    assert choice.fallbacks == ("small (llm)",)

    llm.failing = False
    clock.now += 10  # half-open: the next call probes, succeeds and closes the breaker
    events = list(dispatcher.stream(dispatcher.plan("q", [], "small"), []))
    assert events[-1] == Answer("llm", True, [])
    assert guarded_llm.breaker.state == "closed"
