"""What a query answers (:class:`QueryResult`), and what it says when it cannot search: the
cached answer to the same question, or a plain degraded one (:func:`degraded`).

A query opens an :class:`AnswerSlot` before it searches: the slot's key holds the namespace's
current generation (:mod:`retrieval.answers`) and everything that shapes the answer. A query
that answers fills its slot; one whose search fails reads it. An answer served from the cache
is checked first: every document it cites must still be visible, or it is not served.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import structlog
from sqlalchemy.orm import Session

from app.db.models import Namespace
from app.metrics import DEGRADED_ANSWERS
from app.services.versions import visible_documents
from retrieval.answers import AnswerCache, answer_key
from retrieval.cache import normalise_query
from retrieval.errors import CacheUnavailableError, StoreUnavailableError
from retrieval.generation.base import (
    DEFAULT_OPTIONS,
    Answer,
    Citation,
    GenerationOptions,
    Passage,
)

log = structlog.get_logger(__name__)

# Retry-After of an outage that does not say how long it lasts (a store call that failed while
# its breaker is still closed says 1 s; an embedding failure says nothing).
DEFAULT_RETRY_AFTER_S = 5
# The payload fields a citation shows (app.routers.query): all a cached passage keeps.
_CITED_FIELDS = ("filename", "ordinal", "title", "section", "page")


@dataclass(frozen=True)
class QueryResult:
    """A query's answer, the route that gave it and why, the passages it read, and what each
    stage took (milliseconds)."""

    answer: Answer
    route_name: str
    route_reason: str
    passages: list[Passage] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    cache_hit: bool = False
    # Set when the search could not run: why, and when to ask again (seconds).
    degraded_reason: str | None = None
    retry_after_s: int | None = None

    @property
    def degraded(self) -> bool:
        return self.degraded_reason is not None


@dataclass(frozen=True)
class CachedResult:
    """An answer as it was produced: its text and citations, its route, the cited passages."""

    answer: Answer
    route_name: str
    route_reason: str
    passages: list[Passage]


@dataclass(frozen=True)
class AnswerSlot:
    """Where one query's answer lives in the answer cache."""

    cache: AnswerCache
    key: str

    def store(self, result: CachedResult) -> None:
        """File ``result``; a cache failure is logged, never raised."""
        cited = {c.chunk_id for c in result.answer.citations}
        data = {
            "text": result.answer.text,
            "answerable": result.answer.answerable,
            "abstain_reason": result.answer.abstain_reason,
            "citations": [asdict(c) for c in result.answer.citations],
            "route": [result.route_name, result.route_reason],
            "passages": [
                {
                    "chunk_id": p.chunk_id,
                    "document_id": p.document_id,
                    "text": p.text,
                    "score": p.score,
                    "payload": {k: p.payload.get(k) for k in _CITED_FIELDS},
                }
                for p in result.passages
                if p.chunk_id in cited
            ],
        }
        try:
            self.cache.put(self.key, data)
        except CacheUnavailableError as exc:
            log.warning("answer_not_cached", error=str(exc))

    def load(self, session: Session) -> CachedResult | None:
        """The answer filed here, if any and if every document it cites is still visible.

        A cache failure or a malformed entry is a miss (logged).
        """
        try:
            data = self.cache.get(self.key)
        except CacheUnavailableError as exc:
            log.warning("answer_cache_unavailable", error=str(exc))
            return None
        if data is None:
            return None
        try:
            found = _parse(data)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("answer_cache_corrupt", error=str(exc))
            return None
        cited = {c.document_id for c in found.answer.citations}
        if cited and visible_documents(session, cited) != cited:
            return None  # a cited document was deleted or replaced since
        return found


def open_slot(
    cache: AnswerCache | None,
    namespace: Namespace,
    *,
    question: str,
    filter: Any,  # Any: the request's raw JSON filter
    top_k: int,
    route: str,
    overrides: Mapping[str, Any] | None,
    options: GenerationOptions = DEFAULT_OPTIONS,
) -> AnswerSlot | None:
    """The slot of this query's answer, keyed under the namespace's generation *now*; None
    when there is no answer cache or it cannot be read (the query then files nothing).

    The request's generation ``options`` are part of the key: an answer cut short by
    ``max_tokens`` or sampled at a temperature is filed apart from the route's own.
    """
    if cache is None:
        return None
    try:
        generation = cache.generation(namespace.id)
    except CacheUnavailableError as exc:
        log.warning("answer_cache_unavailable", error=str(exc))
        return None
    shape = {
        "question": normalise_query(question),
        "filter": filter,
        "top_k": top_k,
        "route": route,
        "overrides": dict(overrides or {}),
        # The namespace's own settings shape the answer too (a PATCH changes them).
        "search": namespace.search,
        "routes": namespace.routes,
    }
    if options != DEFAULT_OPTIONS:
        # Only when set: the keys of queries without options stay those already filed.
        shape["generation"] = asdict(options)
    return AnswerSlot(cache, answer_key(namespace.id, generation, shape))


def degraded(session: Session, slot: AnswerSlot | None, exc: Exception) -> QueryResult:
    """The answer when the search cannot run (``exc`` says why): the cached one, else one
    saying why there is none; both carry ``degraded_reason`` and ``retry_after_s``.

    Ends the session's transaction (the visibility check's: SQLite's write lock).
    """
    reason, retry_after_s = outage(exc)
    cached = slot.load(session) if slot is not None else None
    session.commit()
    DEGRADED_ANSWERS.labels("cache" if cached else "none").inc()
    if cached is None:
        return QueryResult(
            answer=unavailable_answer(reason, retry_after_s),
            route_name="none",
            route_reason=f"no answer: {reason}",
            degraded_reason=reason,
            retry_after_s=retry_after_s,
        )
    return QueryResult(
        answer=cached.answer,
        route_name=cached.route_name,
        route_reason=f"cached answer ({cached.route_reason})",
        passages=cached.passages,
        degraded_reason=f"{reason}; served the cached answer",
        retry_after_s=retry_after_s,
    )


def outage(exc: Exception) -> tuple[str, int]:
    """Why a query cannot search, in words, and how long a client should wait (whole seconds)."""
    retry_after = DEFAULT_RETRY_AFTER_S
    if isinstance(exc, StoreUnavailableError):
        what = "the vector store is unavailable"
        if exc.retry_after_s is not None:
            retry_after = max(1, math.ceil(exc.retry_after_s))
    else:
        what = "the embedding model is unavailable"
    return f"{what} ({exc})", retry_after


def unavailable_answer(reason: str, retry_after_s: int) -> Answer:
    """The answer when nothing can be said: it says why and when to ask again."""
    return Answer(
        text=(
            f"No answer can be given right now: {reason}. Please try again in {retry_after_s} s."
        ),
        answerable=False,
        citations=[],
    )


def _parse(data: Mapping[str, Any]) -> CachedResult:
    name, reason = data["route"]
    citations = [Citation(**c) for c in data["citations"]]
    passages: Sequence[Mapping[str, Any]] = data["passages"]
    return CachedResult(
        answer=Answer(
            text=str(data["text"]),
            answerable=bool(data["answerable"]),
            citations=citations,
            abstain_reason=data.get("abstain_reason"),
        ),
        route_name=str(name),
        route_reason=str(reason),
        passages=[Passage(**p) for p in passages],
    )
