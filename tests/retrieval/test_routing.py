"""Routing: the auto decision and its reasons, weighted least outstanding, and fallbacks."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from app.settings import Settings
from retrieval.config import RouteConfig, RoutesConfig
from retrieval.errors import GenerationUnavailableError
from retrieval.generation.base import (
    DEFAULT_OPTIONS,
    Answer,
    Delta,
    GenerationBackend,
    GenerationOptions,
    Passage,
    StreamEvent,
)
from retrieval.generation.catalog import RouteCatalog
from retrieval.generation.endpoints import EndpointPool
from retrieval.generation.extractive import ExtractiveGenerator
from retrieval.generation.openai import OpenAIBackend
from retrieval.generation.routing import (
    Dispatcher,
    RouteChoice,
    RouteFeatures,
    RoutePolicy,
    decide,
    measure,
    question_type,
)
from tests.conftest import free_port

POLICY = RoutePolicy(long_question_tokens=20, large_context_tokens=100, ambiguous_margin=0.05)


def features(**changes: object) -> RouteFeatures:
    base = {
        "question_tokens": 8,
        "context_tokens": 50,
        "top_score": 0.8,
        "margin": 0.2,
        "question_type": "factual",
    }
    return RouteFeatures(**{**base, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "route", "words"),
    [
        ({}, "small", "factual question of 8 tokens"),
        ({"question_tokens": 21}, "large", "long question (21 > 20 tokens)"),
        ({"context_tokens": 101}, "large", "large context (101 > 100 tokens)"),
        ({"margin": 0.01}, "large", "ambiguous retrieval (top-2 margin 0.010 < 0.05)"),
        ({"question_type": "analytical"}, "large", "analytical question"),
        ({"margin": None}, "small", "margin n/a"),
    ],
)
def test_auto_routing_says_which_feature_decided(
    changes: dict[str, object], route: str, words: str
) -> None:
    name, reason = decide(features(**changes), POLICY)
    assert name == route
    assert words in reason


def test_every_reason_that_applies_is_named() -> None:
    _, reason = decide(features(question_tokens=30, question_type="analytical"), POLICY)
    assert "long question" in reason
    assert "analytical question" in reason


@pytest.mark.parametrize(
    ("question", "kind"),
    [
        ("Why do otters hold hands?", "analytical"),
        ("How does aspirin reduce fever?", "analytical"),
        ("Compare statins and fibrates.", "analytical"),
        ("What are the differences between the two trials?", "analytical"),
        ("What is the boiling point of water?", "factual"),
        ("Who wrote the report?", "factual"),
        ("How many patients were enrolled?", "factual"),
    ],
)
def test_question_type(question: str, kind: str) -> None:
    assert question_type(question) == kind


def passage(score: float, text: str = "Otters hold hands.", tokens: int | None = None) -> Passage:
    payload = {} if tokens is None else {"llm_tokens": tokens}
    return Passage("c", "d", text, score, payload)


def test_measure_reads_tokens_scores_and_type() -> None:
    measured = measure(
        "Why do otters hold hands?", [passage(0.7, tokens=40), passage(0.65, tokens=60)]
    )
    assert measured.context_tokens == 100
    assert measured.margin == pytest.approx(0.05)
    assert measured.top_score == pytest.approx(0.7)
    assert measured.question_type == "analytical"
    assert measured.question_tokens == 7


class Slow:
    """A backend that holds each call until released, so calls overlap in time."""

    def __init__(self, name: str) -> None:
        self._name = name
        self.calls = 0
        self.options: list[GenerationOptions] = []  # of each call, in order
        self.release = threading.Event()

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
        self.options.append(options)
        self.release.wait(5)
        return Answer(self._name, True, [])

    def stream(
        self,
        question: str,
        question_vector: Sequence[float],
        passages: Sequence[Passage],
        *,
        options: GenerationOptions = DEFAULT_OPTIONS,
    ) -> Iterator[StreamEvent]:
        answer = self.generate(question, question_vector, passages, options=options)
        yield Delta(answer.text)
        yield answer


def test_the_endpoint_with_fewest_outstanding_per_weight_is_picked() -> None:
    heavy, light = Slow("heavy"), Slow("light")
    pool = EndpointPool([(heavy, 3.0), (light, 1.0)])
    held = []
    for _ in range(8):
        context = pool.acquire()
        held.append((context, context.__enter__()[1]))

    # Weighted least outstanding: 3 : 1 while all are in flight.
    assert pool.outstanding() == [6, 2]
    # The picks went heavy x3, light, heavy x3, light: release the first six.
    assert [backend.name for _, backend in held] == ["heavy"] * 3 + ["light"] + ["heavy"] * 3 + [
        "light"
    ]
    for context, _ in held[:6]:
        context.__exit__(None, None, None)
    assert pool.outstanding() == [1, 1]
    with pool.acquire() as (_, chosen):
        assert chosen.name == "heavy"  # (1 + 1) / 3 < (1 + 1) / 1
    for context, _ in held[6:]:
        context.__exit__(None, None, None)
    assert pool.outstanding() == [0, 0]


def test_a_slow_endpoint_stops_getting_work_while_busy() -> None:
    slow, fast = Slow("slow"), Slow("fast")
    fast.release.set()
    pool = EndpointPool([(slow, 1.0), (fast, 1.0)])
    for _ in range(3):
        with pool.acquire() as (_, first):
            pass
        assert first.name == "slow"  # with nothing in flight, ties go to the first listed
    stuck = threading.Thread(target=lambda: _call(pool))
    stuck.start()
    while pool.outstanding()[0] == 0:
        pass
    # While the slow endpoint holds a call, every new call goes to the fast one.
    for _ in range(5):
        _call(pool)
    assert fast.calls == 5
    slow.release.set()
    stuck.join()


def _call(pool: EndpointPool) -> None:
    with pool.acquire() as (_, backend):
        backend.generate("q", [], [])


@pytest.fixture
def extractive(embedder) -> GenerationBackend:
    return ExtractiveGenerator(embedder)


@pytest.fixture
def unreachable() -> EndpointPool:
    backend = OpenAIBackend(f"http://127.0.0.1:{free_port()}/v1", "nothing", timeout_s=2)
    return EndpointPool([(backend, 1.0)])


OTTERS = "Sea otters hold hands while they sleep so that they do not drift apart."


@pytest.mark.slow
@pytest.mark.parametrize("requested", ["large", "small", "auto"])
def test_a_failing_route_falls_back_to_the_next_and_says_so(
    embedder, extractive: GenerationBackend, unreachable: EndpointPool, requested: str
) -> None:
    dispatcher = Dispatcher(small=unreachable, large=unreachable, extractive=extractive)
    question = "Why do sea otters hold hands?"
    [vector] = embedder.encode([question])
    passages = [Passage("c1", "d1", OTTERS, 0.8)]

    plan = dispatcher.plan(question, passages, requested)  # type: ignore[arg-type]
    answer, choice = dispatcher.answer(plan, vector)

    assert choice.name == "extractive"
    assert answer.answerable
    expected = ["large (openai:nothing)", "small (openai:nothing)"]
    if requested == "small":
        expected = expected[1:]
    assert list(choice.fallbacks) == expected
    assert "fell back after" in choice.reason


@pytest.mark.slow
def test_streaming_falls_back_before_the_first_token(
    embedder, extractive: GenerationBackend, unreachable: EndpointPool
) -> None:
    dispatcher = Dispatcher(small=unreachable, large=None, extractive=extractive)
    question = "What do sea otters hold?"
    [vector] = embedder.encode([question])

    plan = dispatcher.plan(question, [Passage("c1", "d1", OTTERS, 0.8)], "small")
    events = list(dispatcher.stream(plan, vector))

    assert isinstance(events[0], RouteChoice)
    assert events[0].name == "extractive"
    assert isinstance(events[-1], Answer)
    assert "".join(e.text for e in events if isinstance(e, Delta)) == events[-1].text


def test_without_llm_routes_the_answer_is_extractive() -> None:
    dispatcher = Dispatcher(small=None, large=None, extractive=Slow("extractive"))
    plan = dispatcher.plan("Why?", [], "large")
    assert plan.chain == ("extractive",)
    assert "no LLM route is configured" in plan.reason


def test_an_unavailable_error_names_the_backend() -> None:
    error = GenerationUnavailableError("down", backend="openai:x", status_code=503)
    assert error.backend == "openai:x"


@pytest.mark.slow
def test_a_dead_endpoint_hands_the_question_to_its_sibling(
    embedder, extractive: GenerationBackend
) -> None:
    dead = OpenAIBackend(f"http://127.0.0.1:{free_port()}/v1", "dead", timeout_s=2)
    alive = Slow("alive")
    alive.release.set()
    # The dead endpoint is listed first and idle, so it wins the pick; the sibling answers.
    dispatcher = Dispatcher(
        small=EndpointPool([(dead, 1.0), (alive, 1.0)]), large=None, extractive=extractive
    )
    question = "What do sea otters hold?"
    [vector] = embedder.encode([question])

    plan = dispatcher.plan(question, [Passage("c1", "d1", OTTERS, 0.8)], "small")
    answer, choice = dispatcher.answer(plan, vector)

    assert (choice.name, choice.backend, answer.text) == ("small", "alive", "alive")
    assert choice.fallbacks == ("small (openai:dead)",)
    events = list(dispatcher.stream(plan, vector))
    assert isinstance(events[0], RouteChoice)
    assert events[0].backend == "alive"


def test_a_fallback_gets_the_requests_options_too() -> None:
    dead = OpenAIBackend(f"http://127.0.0.1:{free_port()}/v1", "dead", timeout_s=2)
    fallback = Slow("extractive")
    fallback.release.set()
    dispatcher = Dispatcher(small=EndpointPool([(dead, 1.0)]), large=None, extractive=fallback)
    options = GenerationOptions(max_tokens=5, temperature=0.5)
    passages = [Passage("c1", "d1", OTTERS, 0.8)]

    plan = dispatcher.plan("q", passages, "small")
    _, choice = dispatcher.answer(plan, [], options=options)
    events = list(dispatcher.stream(plan, [], options=options))

    assert choice.fallbacks == ("small (openai:dead)",)
    assert isinstance(events[0], RouteChoice)
    assert events[0].name == "extractive"
    assert fallback.options == [options, options]


def test_acquire_skips_endpoints_that_failed() -> None:
    pool = EndpointPool([(Slow("a"), 1.0), (Slow("b"), 1.0)])
    with pool.acquire(skip={0}) as (index, backend):
        assert (index, backend.name) == (1, "b")
    with pytest.raises(LookupError), pool.acquire(skip={0, 1}):
        pass


class _KeyCatcher(BaseHTTPRequestHandler):
    """An OpenAI endpoint that notes each call's Authorization header and fails it."""

    seen: ClassVar[list[str | None]] = []

    def do_POST(self) -> None:
        self.seen.append(self.headers.get("Authorization"))
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(500)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_the_endpoint_key_is_read_from_the_environment_once_at_start_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _KeyCatcher)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    endpoint = {"url": url, "model": "m", "api_key_env": "SHOAL_TEST_LLM_KEY"}
    monkeypatch.setenv("SHOAL_TEST_LLM_KEY", "sk-read-at-start")
    settings = Settings(generators={"llm": {"backend": "openai", "endpoints": [endpoint]}})
    monkeypatch.setenv("SHOAL_TEST_LLM_KEY", "sk-changed-later")
    key = settings.generators["llm"].endpoints[0].api_key
    assert key is not None
    assert "sk-read-at-start" not in repr(settings)  # a SecretStr: never printed
    assert "sk-read-at-start" not in settings.model_dump_json()

    fallback = Slow("extractive")
    fallback.release.set()
    catalog = RouteCatalog(
        generators=settings.generators,
        default=RoutesConfig(small="llm"),
        extractive=fallback,
        min_score=None,
    )
    dispatcher = catalog.dispatcher({}, scope="tenant-a")
    try:
        _, choice = dispatcher.answer(dispatcher.plan("q", [passage(0.8)], "small"), [])
    finally:
        server.shutdown()
        server.server_close()

    assert choice.fallbacks == ("small (openai:m)",)
    assert _KeyCatcher.seen[-1] == "Bearer sk-read-at-start"


def test_the_token_budget_is_the_planned_routes() -> None:
    generators = {
        "fast": RouteConfig(backend="local", model_path="/nowhere", max_output_tokens=64),
        "big": RouteConfig(backend="local", model_path="/nowhere", max_output_tokens=512),
    }
    pool = EndpointPool([(Slow("llm"), 1.0)])
    dispatcher = Dispatcher(
        small=pool,
        large=pool,
        extractive=Slow("extractive"),
        policy=POLICY,
        generators={"small": generators["fast"], "large": generators["big"]},
    )
    passages = [passage(0.8), passage(0.5)]

    factual = dispatcher.plan("Who wrote it?", passages, "auto")
    analytical = dispatcher.plan("Why do otters hold hands?", passages, "auto")
    capped = dispatcher.token_budget(analytical, GenerationOptions(max_tokens=10))

    assert (factual.route, analytical.route) == ("small", "large")
    assert dispatcher.token_budget(analytical) - dispatcher.token_budget(factual) > 400
    assert dispatcher.token_budget(analytical) - capped == 512 - 10
    extractive = Dispatcher(small=None, large=None, extractive=Slow("extractive"))
    assert extractive.token_budget(extractive.plan("Why?", passages, "auto")) == 0
