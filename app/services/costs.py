"""What an answer costs, counted: its model tokens reserved before generating and settled
after, the request and its tokens in the usage ledger, and the metrics of its stages and route."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from app.metrics import GENERATION_TOKENS, ROUTE_DECISIONS, STAGE_SECONDS
from app.services.limits import Quotas, RateLimits
from app.services.usage import UsageLedger
from retrieval.generation.base import Answer
from retrieval.generation.routing import Requested, RouteChoice


@dataclass
class Hold:
    """A token reservation while its answer is made: ``used`` is what to settle with (the
    answer's tokens, once known); ``answering`` is set once the backend has started."""

    used: int = 0
    answering: bool = False


@contextmanager
def reserved(limits: RateLimits | None, quotas: Quotas | None, tokens: int) -> Iterator[Hold]:
    """Reserve ``tokens`` against ``quotas`` for the block, and always settle it.

    The block ending settles with ``Hold.used`` (the real usage; 0 when nothing was generated).
    Failing before the backend started answering settles 0. Failing after (a client that
    disconnects mid-stream, a backend that fails after sending text) keeps the reservation
    whole: backends report usage only with the final answer, and the model may well have spent
    it. Without limits or quotas nothing is reserved.

    Raises:
        RateLimitedError: the token budget cannot cover ``tokens``.
        LimiterUnavailableError: the shared limiter is down and limits fail closed.
    """
    hold = Hold()
    if limits is None or quotas is None:
        yield hold
        return
    reservation, _ = limits.reserve(quotas, tokens)
    try:
        yield hold
    except BaseException:
        if not hold.answering:
            limits.settle(reservation, 0)
        raise
    limits.settle(reservation, hold.used)


def record(
    usage: UsageLedger | None, tenant_id: str, key_id: str, answer: Answer | None = None
) -> None:
    """Count one request in the usage, with ``answer``'s tokens if there is one."""
    if usage is not None:
        usage.add(
            tenant_id=tenant_id,
            key_id=key_id,
            prompt_tokens=answer.prompt_tokens if answer is not None else 0,
            completion_tokens=answer.completion_tokens if answer is not None else 0,
        )


def observe_route(choice: RouteChoice, requested: Requested, answer: Answer) -> None:
    """The route decision and the tokens the answer spent on it, as metrics."""
    decided_by = "auto" if requested == "auto" else "requested"
    ROUTE_DECISIONS.labels(choice.name, decided_by, str(bool(choice.fallbacks)).lower()).inc()
    GENERATION_TOKENS.labels(choice.name, "prompt").inc(answer.prompt_tokens)
    GENERATION_TOKENS.labels(choice.name, "completion").inc(answer.completion_tokens)


def observe_stages(timings: Mapping[str, float]) -> None:
    """Each stage's time (milliseconds in ``timings``), as metrics."""
    for stage in ("embed", "search", "rerank", "generate"):
        if stage in timings:
            STAGE_SECONDS.labels(stage).observe(timings[stage] / 1000)
