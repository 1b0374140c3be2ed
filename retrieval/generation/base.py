"""What every answer generator takes and gives back.

A :class:`GenerationBackend` turns a question and the passages retrieved for it into an
:class:`Answer` whose claims are backed by :class:`Citation` objects, or abstains. The
extractive backend quotes; the LLM backends paraphrase but cite the same way.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from retrieval.stores.base import Payload

# Why an answer abstained: the search found no passage; the passages are on the topic but do not
# hold the answer (the evidence gate, retrieval.generation.evidence); the best passage is under
# a configured ``min_score``; the model read the passages and said they do not answer.
AbstainReason = Literal["no_passages", "weak_evidence", "below_min_score", "model_declined"]


@dataclass(frozen=True)
class Passage:
    """A retrieved chunk: its point id, document, text and retrieval score (cosine)."""

    chunk_id: str
    document_id: str
    text: str
    score: float
    payload: Payload = field(default_factory=dict)


@dataclass(frozen=True)
class Citation:
    """Evidence for part of an answer: the text actually used and the chunk it came from.

    ``text`` is the quoted sentence(s), or the chunk text when a backend used all of it;
    ``score`` is the passage's retrieval score.
    """

    document_id: str
    chunk_id: str
    text: str
    score: float


@dataclass(frozen=True)
class Answer:
    """A generated answer. ``answerable`` is False when the backend abstained.

    Markers ``[n]`` in ``text`` refer to ``citations[n - 1]``. Token counts are what an LLM
    backend was billed; 0 for backends that call no model. ``abstain_reason`` says why an
    abstaining answer abstained (:data:`AbstainReason`); None when it answers.
    """

    text: str
    answerable: bool
    citations: list[Citation]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    abstain_reason: AbstainReason | None = None


@dataclass(frozen=True)
class Delta:
    """A piece of answer text, in the order a streaming backend produced it."""

    text: str


# What :meth:`GenerationBackend.stream` yields: deltas, then exactly one final Answer.
StreamEvent = Delta | Answer


@dataclass(frozen=True)
class GenerationOptions:
    """What one request asks of an LLM backend; None keeps the route's own setting.

    ``max_tokens`` can only lower the route's longest answer, never raise it: that cap is the
    operator's (:meth:`cap`). ``temperature`` replaces the route's sampling temperature (0 is
    greedy, the routes' own). The extractive backend quotes sentences and uses neither.
    """

    max_tokens: int | None = None
    temperature: float | None = None

    def __post_init__(self) -> None:
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}")
        if self.temperature is not None and self.temperature < 0:
            raise ValueError(f"temperature must not be negative, got {self.temperature}")

    def cap(self, route_max_tokens: int) -> int:
        """The longest answer on a route whose own cap is ``route_max_tokens``: the smaller."""
        if self.max_tokens is None:
            return route_max_tokens
        return min(self.max_tokens, route_max_tokens)


# No option set: every route answers with its own settings.
DEFAULT_OPTIONS = GenerationOptions()


class GenerationBackend(Protocol):
    """Answers a question from passages, citing them, or abstains.

    ``name`` identifies the backend in routes, responses and metrics (``extractive``,
    ``openai:<model>``, ``local:<model>``).
    """

    @property
    def name(self) -> str:
        """Stable identifier of the backend and its model."""
        ...

    def generate(
        self,
        question: str,
        question_vector: Sequence[float],
        passages: Sequence[Passage],
        *,
        options: GenerationOptions = DEFAULT_OPTIONS,
    ) -> Answer:
        """Answer ``question`` from ``passages`` (best first) alone, never from elsewhere.

        ``question_vector`` is the question's unit-length embedding, already computed for
        retrieval, so backends that score text against the question need not embed it again.
        With no passage good enough the answer abstains: ``answerable=False``, no citations.
        ``options`` are the request's (:class:`GenerationOptions`).
        """
        ...

    def stream(
        self,
        question: str,
        question_vector: Sequence[float],
        passages: Sequence[Passage],
        *,
        options: GenerationOptions = DEFAULT_OPTIONS,
    ) -> Iterator[StreamEvent]:
        """:meth:`generate`, incrementally: :class:`Delta` pieces as they are produced, then
        exactly one :class:`Answer`, whose ``text`` is the deltas joined.

        Raises what :meth:`generate` raises, before the first delta or between two.
        """
        ...
