"""Routing a question to the ``small`` or ``large`` generation route, and a route to an endpoint.

The router decides from features it can measure before generating (:class:`RouteFeatures`):
the question's length in tokens, the size of the retrieved context, the margin between the
best two passages, and the question's type. Each threshold is a setting of
:class:`RoutePolicy`; the decision comes with a reason naming the features that drove it, which
the API returns and exports as a metric.

A route lists one or more endpoints with weights. Each call goes to the endpoint with the
fewest requests in flight relative to its weight (weighted least outstanding requests): unlike
round robin, a slow or saturated endpoint stops getting work until it catches up. Counts are
per process: across API replicas each balances its own share, which is what load balancers
that use least connections also do.

Failure falls back large → small → extractive: a backend that raises
:class:`~retrieval.errors.GenerationUnavailableError` hands the question to the next route, and
the reason says so. The extractive route calls no model, so an answer always comes back.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import structlog

from retrieval.errors import GenerationUnavailableError
from retrieval.generation.base import (
    DEFAULT_OPTIONS,
    Answer,
    GenerationBackend,
    GenerationOptions,
    Passage,
    StreamEvent,
)
from retrieval.generation.prompt import count_tokens, passage_tokens

log = structlog.get_logger(__name__)

RouteName = Literal["small", "large", "extractive"]
Requested = Literal["small", "large", "auto"]

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


@dataclass
class _Endpoint:
    backend: GenerationBackend
    weight: float
    outstanding: int = 0


class EndpointPool:
    """A route's endpoints, picked by weighted least outstanding requests.

    Ties go to the endpoint listed first, so with nothing in flight the first one serves.
    """

    def __init__(self, endpoints: Sequence[tuple[GenerationBackend, float]]) -> None:
        if not endpoints:
            raise ValueError("a route needs at least one endpoint")
        if any(weight <= 0 for _, weight in endpoints):
            raise ValueError("endpoint weights must be positive")
        self._endpoints = [_Endpoint(backend, weight) for backend, weight in endpoints]
        self._lock = threading.Lock()

    def outstanding(self) -> list[int]:
        with self._lock:
            return [e.outstanding for e in self._endpoints]

    @property
    def size(self) -> int:
        return len(self._endpoints)

    @contextmanager
    def acquire(self, skip: Collection[int] = ()) -> Iterator[tuple[int, GenerationBackend]]:
        """The endpoint to call now, and its index; it counts as busy until the block exits.

        ``skip`` holds indices not to pick (endpoints that just failed this request).

        Raises:
            LookupError: every endpoint is skipped.
        """
        with self._lock:
            candidates = [(i, e) for i, e in enumerate(self._endpoints) if i not in skip]
            if not candidates:
                raise LookupError("every endpoint of the route was tried")
            index, chosen = min(candidates, key=lambda c: (c[1].outstanding + 1) / c[1].weight)
            chosen.outstanding += 1
        try:
            yield index, chosen.backend
        finally:
            with self._lock:
                chosen.outstanding -= 1


@dataclass(frozen=True)
class RouteChoice:
    """Which route answered and why; ``fallbacks`` lists the routes that failed first.

    ``none`` when no route ran: the evidence gate abstained before generating.
    """

    name: RouteName | Literal["none"]
    reason: str
    backend: str
    fallbacks: tuple[str, ...] = field(default_factory=tuple)


class Router:
    """Picks a route per question and falls back large → small → extractive on failure."""

    def __init__(
        self,
        *,
        small: EndpointPool | None,
        large: EndpointPool | None,
        extractive: GenerationBackend,
        policy: RoutePolicy = RoutePolicy(),
    ) -> None:
        self._pools: dict[RouteName, EndpointPool | None] = {"small": small, "large": large}
        self._extractive = extractive
        self.policy = policy

    def plan(
        self, question: str, passages: Sequence[Passage], requested: Requested
    ) -> tuple[list[RouteName], str]:
        """The routes to try in order, and why the first was chosen."""
        if requested == "auto":
            wanted, reason = decide(measure(question, passages), self.policy)
        else:
            wanted, reason = requested, f"requested: {requested}"
        order: list[RouteName] = ["large", "small"] if wanted == "large" else ["small"]
        chain = [r for r in order if self._pools.get(r) is not None]
        if not chain:
            configured = "no LLM route is configured"
            return ["extractive"], f"{reason}; extractive answer: {configured}"
        return [*chain, "extractive"], reason

    def answer(
        self,
        question: str,
        vector: Sequence[float],
        passages: Sequence[Passage],
        requested: Requested = "auto",
        *,
        options: GenerationOptions = DEFAULT_OPTIONS,
    ) -> tuple[Answer, RouteChoice]:
        """Generate with the planned route, falling back on failure.

        Within a route, a failed endpoint hands the question to the route's next best endpoint
        (so one dead replica never sends answers down a route); when all have failed, the next
        route takes over. Every backend tried gets the request's ``options``.
        """
        chain, reason = self.plan(question, passages, requested)
        failed: list[str] = []
        for route in chain:
            pool = self._pools.get(route) if route != "extractive" else None
            tried: set[int] = set()
            while pool is None or len(tried) < pool.size:
                with _acquire(pool, self._extractive, tried) as (index, backend):
                    try:
                        answer = backend.generate(question, vector, passages, options=options)
                    except GenerationUnavailableError as exc:
                        log.warning("route_failed", route=route, error=str(exc))
                        failed.append(f"{route} ({exc.backend})")
                        tried.add(index)
                        continue
                    return answer, _choice(route, reason, backend.name, failed)
        raise AssertionError("unreachable: the extractive route never raises this")

    def stream(
        self,
        question: str,
        vector: Sequence[float],
        passages: Sequence[Passage],
        requested: Requested = "auto",
        *,
        options: GenerationOptions = DEFAULT_OPTIONS,
    ) -> Iterator[RouteChoice | StreamEvent]:
        """:meth:`answer`, streamed: the :class:`RouteChoice` first, then the backend's events.

        An endpoint that fails before its first delta falls back like :meth:`answer`; one that
        fails after it has streamed text cannot take the text back, so the error propagates.
        """
        chain, reason = self.plan(question, passages, requested)
        failed: list[str] = []
        for route in chain:
            pool = self._pools.get(route) if route != "extractive" else None
            tried: set[int] = set()
            while pool is None or len(tried) < pool.size:
                with _acquire(pool, self._extractive, tried) as (index, backend):
                    events = backend.stream(question, vector, passages, options=options)
                    try:
                        first = next(events)
                    except GenerationUnavailableError as exc:
                        log.warning("route_failed", route=route, error=str(exc))
                        failed.append(f"{route} ({exc.backend})")
                        tried.add(index)
                        continue
                    yield _choice(route, reason, backend.name, failed)
                    yield first
                    yield from events
                    return
        raise AssertionError("unreachable: the extractive route never raises this")


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
