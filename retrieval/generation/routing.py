"""Routing a question to the ``small`` or ``large`` generation route, and running the route.

:meth:`Dispatcher.plan` decides from features it can measure before generating
(:class:`RouteFeatures`): the question's length in tokens, the size of the retrieved context,
the margin between the best two passages, and the question's type. Each threshold is a setting
of :class:`RoutePolicy`; the decision comes with a reason naming the features that drove it,
which the API returns and exports as a metric. The :class:`Plan` is made once per answer: the
token budget (:meth:`Dispatcher.token_budget`) and the generation both read it.

A route lists one or more endpoints with weights (:class:`~retrieval.generation.endpoints.
EndpointPool`). Failure falls back large → small → extractive: a backend that raises
:class:`~retrieval.errors.GenerationUnavailableError` hands the question to the route's next
endpoint, then to the next route, and the reason says so. The extractive route calls no model,
so an answer always comes back.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import structlog

from retrieval.config import RouteConfig
from retrieval.errors import GenerationUnavailableError
from retrieval.generation.base import (
    DEFAULT_OPTIONS,
    Answer,
    GenerationBackend,
    GenerationOptions,
    Passage,
    StreamEvent,
)
from retrieval.generation.endpoints import EndpointPool
from retrieval.generation.prompt import build_prompt, count_tokens, passage_tokens

log = structlog.get_logger(__name__)

RouteName = Literal["small", "large", "extractive"]
Requested = Literal["small", "large", "auto"]

# Budgets are counted with tiktoken (cl100k); a model's own tokenizer may need more tokens for
# the same text (SmolLM2's: about 14 % more). Reserving this much more keeps a reservation
# above the usage the server then reports, so settling never runs a budget into debt.
TOKENIZER_MARGIN = 1.25

# Questions that ask for reasoning, comparison or explanation rather than a fact lookup.
_ANALYTICAL = re.compile(
    r"^\s*(why|how (?:does|do|did|can|could|would|should|is|are)|explain|compare|contrast|"
    r"evaluate|analy[sz]e|discuss|what (?:are the (?:differences|implications|trade-?offs)|"
    r"would happen|if))\b|\b(versus|vs\.?|differences? between|pros and cons|trade-?offs?)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class RoutePolicy:
    """When ``auto`` picks the large route: any one reason suffices.

    A long question, a large context to read, an ambiguous retrieval (the two best passages
    score within ``ambiguous_margin`` of each other, so the answer must weigh them), or a
    question asking for analysis (:func:`question_type`).
    """

    long_question_tokens: int = 40
    large_context_tokens: int = 1500
    ambiguous_margin: float = 0.02
    analytical_to_large: bool = True


@dataclass(frozen=True)
class RouteFeatures:
    question_tokens: int
    context_tokens: int
    top_score: float | None
    margin: float | None
    question_type: Literal["factual", "analytical"]


def question_type(question: str) -> Literal["factual", "analytical"]:
    """``analytical`` for why/how/explain/compare questions, else ``factual``."""
    return "analytical" if _ANALYTICAL.search(question) else "factual"


def measure(question: str, passages: Sequence[Passage]) -> RouteFeatures:
    """The routing features of ``question`` and its retrieved ``passages`` (best first)."""
    scores = sorted((p.score for p in passages), reverse=True)
    context = sum(passage_tokens(p) for p in passages)
    return RouteFeatures(
        question_tokens=count_tokens(question),
        context_tokens=context,
        top_score=scores[0] if scores else None,
        margin=scores[0] - scores[1] if len(scores) > 1 else None,
        question_type=question_type(question),
    )


def decide(features: RouteFeatures, policy: RoutePolicy) -> tuple[RouteName, str]:
    """``small`` or ``large`` for ``features``, with the reason in words."""
    reasons = []
    if features.question_tokens > policy.long_question_tokens:
        reasons.append(
            f"long question ({features.question_tokens} > {policy.long_question_tokens} tokens)"
        )
    if features.context_tokens > policy.large_context_tokens:
        reasons.append(
            f"large context ({features.context_tokens} > {policy.large_context_tokens} tokens)"
        )
    if features.margin is not None and features.margin < policy.ambiguous_margin:
        reasons.append(
            f"ambiguous retrieval (top-2 margin {features.margin:.3f} < {policy.ambiguous_margin})"
        )
    if policy.analytical_to_large and features.question_type == "analytical":
        reasons.append("analytical question")
    if reasons:
        return "large", "auto: " + "; ".join(reasons)
    margin = "n/a" if features.margin is None else f"{features.margin:.3f}"
    return "small", (
        f"auto: factual question of {features.question_tokens} tokens, "
        f"{features.context_tokens} context tokens, top-2 margin {margin}"
    )


@dataclass(frozen=True)
class RouteChoice:
    """Which route answered and why; ``fallbacks`` lists the routes that failed first.

    ``none`` when no route ran: the evidence gate abstained before generating.
    """

    name: RouteName | Literal["none"]
    reason: str
    backend: str
    fallbacks: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Plan:
    """What :meth:`Dispatcher.plan` decided for one question: the routes to try in order (the
    last is always ``extractive``), why the first, and what they answer from."""

    question: str
    passages: Sequence[Passage]
    chain: tuple[RouteName, ...]
    reason: str

    @property
    def route(self) -> RouteName:
        """The route the plan starts with (the one whose budget is reserved)."""
        return self.chain[0]


class Dispatcher:
    """Plans a route per question, then generates on it, falling back large → small →
    extractive on failure.

    ``generators`` holds the operator's configuration of the ``small`` and ``large`` routes,
    which their token budgets read; a route without one costs no budget.
    """

    def __init__(
        self,
        *,
        small: EndpointPool | None,
        large: EndpointPool | None,
        extractive: GenerationBackend,
        policy: RoutePolicy = RoutePolicy(),
        generators: Mapping[RouteName, RouteConfig] | None = None,
    ) -> None:
        self._pools: dict[RouteName, EndpointPool | None] = {"small": small, "large": large}
        self._extractive = extractive
        self._generators = dict(generators or {})
        self.policy = policy

    def plan(self, question: str, passages: Sequence[Passage], requested: Requested) -> Plan:
        """The routes to try for ``question`` and its ``passages``, in order, and why."""
        if requested == "auto":
            wanted, reason = decide(measure(question, passages), self.policy)
        else:
            wanted, reason = requested, f"requested: {requested}"
        order: list[RouteName] = ["large", "small"] if wanted == "large" else ["small"]
        chain = [r for r in order if self._pools.get(r) is not None]
        if not chain:
            reason = f"{reason}; extractive answer: no LLM route is configured"
        return Plan(question, passages, (*chain, "extractive"), reason)

    def token_budget(self, plan: Plan, options: GenerationOptions = DEFAULT_OPTIONS) -> int:
        """The most model tokens an answer on the plan's first route may cost: its prompt as
        the backend packs it (tiktoken's count of the question and the passages that fit, plus
        :data:`TOKENIZER_MARGIN`) and the longest answer the request allows (the route's, or
        the request's smaller ``options.max_tokens``), at most the route's context window (no
        server takes more). 0 for the extractive answer (no model).
        """
        generator = self._generators.get(plan.route)
        if generator is None or generator.backend == "extractive":
            return 0
        # Backends pack passages for the route's own cap, whatever the request's: so does this.
        prompt = build_prompt(
            plan.question,
            plan.passages,
            context_window=generator.context_window,
            max_output_tokens=generator.max_output_tokens,
        )
        prompt_tokens = math.ceil(prompt.prompt_tokens * TOKENIZER_MARGIN)
        answer_tokens = options.cap(generator.max_output_tokens)
        return min(generator.context_window, prompt_tokens + answer_tokens)

    def answer(
        self,
        plan: Plan,
        vector: Sequence[float],
        *,
        options: GenerationOptions = DEFAULT_OPTIONS,
    ) -> tuple[Answer, RouteChoice]:
        """Generate on the planned routes, falling back on failure.

        Within a route, a failed endpoint hands the question to the route's next best endpoint
        (so one dead replica never sends answers down a route); when all have failed, the next
        route takes over. Every backend tried gets the request's ``options``.
        """
        failed: list[str] = []
        for route in plan.chain:
            pool = self._pools.get(route) if route != "extractive" else None
            tried: set[int] = set()
            while pool is None or len(tried) < pool.size:
                with _acquire(pool, self._extractive, tried) as (index, backend):
                    try:
                        answer = backend.generate(
                            plan.question, vector, plan.passages, options=options
                        )
                    except GenerationUnavailableError as exc:
                        log.warning("route_failed", route=route, error=str(exc))
                        failed.append(f"{route} ({exc.backend})")
                        tried.add(index)
                        continue
                    return answer, _choice(route, plan.reason, backend.name, failed)
        raise AssertionError("unreachable: the extractive route never raises this")

    def stream(
        self,
        plan: Plan,
        vector: Sequence[float],
        *,
        options: GenerationOptions = DEFAULT_OPTIONS,
    ) -> Generator[RouteChoice | StreamEvent]:
        """:meth:`answer`, streamed: the :class:`RouteChoice` first, then the backend's events.

        An endpoint that fails before its first delta falls back like :meth:`answer`; one that
        fails after it has streamed text cannot take the text back, so the error propagates.
        """
        failed: list[str] = []
        for route in plan.chain:
            pool = self._pools.get(route) if route != "extractive" else None
            tried: set[int] = set()
            while pool is None or len(tried) < pool.size:
                with _acquire(pool, self._extractive, tried) as (index, backend):
                    events = backend.stream(plan.question, vector, plan.passages, options=options)
                    try:
                        first = next(events)
                    except GenerationUnavailableError as exc:
                        log.warning("route_failed", route=route, error=str(exc))
                        failed.append(f"{route} ({exc.backend})")
                        tried.add(index)
                        continue
                    yield _choice(route, plan.reason, backend.name, failed)
                    yield first
                    yield from events
                    return
        raise AssertionError("unreachable: the extractive route never raises this")

    def generate(
        self,
        plan: Plan,
        vector: Sequence[float],
        *,
        options: GenerationOptions = DEFAULT_OPTIONS,
        stream: bool = False,
    ) -> Generator[RouteChoice | StreamEvent]:
        """The answer on ``plan`` as events, the :class:`RouteChoice` first: streamed
        (:meth:`stream`: the text in pieces as the backend writes it), or whole
        (:meth:`answer`: the answer alone, once written)."""
        if stream:
            yield from self.stream(plan, vector, options=options)
            return
        answer, choice = self.answer(plan, vector, options=options)
        yield choice
        yield answer


@contextmanager
def _acquire(
    pool: EndpointPool | None, extractive: GenerationBackend, tried: Collection[int]
) -> Iterator[tuple[int, GenerationBackend]]:
    if pool is None:
        yield -1, extractive
        return
    with pool.acquire(skip=tried) as chosen:
        yield chosen


def _choice(route: RouteName, reason: str, backend: str, failed: list[str]) -> RouteChoice:
    if failed:
        reason = f"{reason}; fell back after {', '.join(failed)} failed"
    return RouteChoice(route, reason, backend, tuple(failed))
