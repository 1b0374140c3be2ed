"""Questions: search and query bodies, and what comes back (passages, answers, citations)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, Field, StringConstraints

from app.schemas.common import Strict
from app.services.answers import QueryResult
from retrieval.config import SearchMode
from retrieval.generation.base import AbstainReason, Citation, Passage
from retrieval.search import Retrieved


class SearchQuery(Strict):
    question: Annotated[
        str, StringConstraints(min_length=1, max_length=4000, strip_whitespace=True)
    ]
    top_k: int | None = Field(None, ge=1, le=50)
    filter: dict[str, Any] | None = Field(
        None,
        description=(
            "Metadata filter over the namespace's indexed_fields: `{field, eq|in|range|exists}` "
            "conditions combined with `and`/`or`/`not` (README: Metadata filters)."
        ),
    )
    mode: SearchMode | None = Field(None, description="Override the namespace's search mode.")
    rerank: bool | None = Field(None, description="Override the namespace's rerank choice.")


class QueryRequest(SearchQuery):
    route: Literal["small", "large", "auto"] = Field(
        "auto",
        description="Generation route; `auto` decides from the question and retrieved context.",
    )
    stream: bool = Field(
        False,
        description=(
            "Answer as Server-Sent Events: `token` events, then `citations`, then `done` with "
            "route, usage and timings."
        ),
    )
    max_tokens: int | None = Field(
        None,
        ge=1,
        le=32_768,
        description=(
            "Longest answer, in model tokens: lowers the route's `max_output_tokens`, never "
            "raises it; the token reservation shrinks with it. The extractive answer quotes "
            "whole sentences and ignores it."
        ),
    )
    temperature: float | None = Field(
        None,
        ge=0,
        le=2,
        description=(
            "Sampling temperature of the route's model (routes answer at 0, greedy). The "
            "extractive answer ignores it."
        ),
    )


class CitationPublic(BaseModel):
    document_id: str
    chunk_id: str
    text: str
    score: float
    filename: str | None = None
    ordinal: int | None = None
    title: str | None = None
    section: str | None = None
    page: int | None = None

    @classmethod
    def of(cls, cited: Citation | Passage, payload: dict[str, Any]) -> Self:
        """A chunk as clients see it: its text and score, and where it comes from (file,
        position, title, section, page, from its ``payload``)."""
        source = {
            key: payload.get(key) for key in ("filename", "ordinal", "title", "section", "page")
        }
        return cls(
            document_id=cited.document_id,
            chunk_id=cited.chunk_id,
            text=cited.text,
            score=cited.score,
            **source,
        )


class SearchResults(BaseModel):
    """The passages a question retrieves, best first, with no answer generated."""

    passages: list[CitationPublic]
    timings_ms: dict[str, float]

    @classmethod
    def of(cls, found: Retrieved) -> Self:
        return cls(
            passages=[CitationPublic.of(p, p.payload) for p in found.passages],
            timings_ms=found.timings_ms,
        )


class RoutePublic(BaseModel):
    name: str
    reason: str


class UsageTokens(BaseModel):
    prompt_tokens: int
    completion_tokens: int


class QueryAnswer(BaseModel):
    answer: str
    answerable: bool
    abstain_reason: AbstainReason | None = Field(
        None,
        description=(
            "Why the answer abstained: `no_passages` (the search found nothing), "
            "`weak_evidence` (passages on the topic, but not the answer), `below_min_score` "
            "(under the namespace's `min_score`), `model_declined` (the model read the "
            "passages and said they do not answer). Null when it answers."
        ),
    )
    citations: list[CitationPublic]
    route: RoutePublic
    degraded: bool = Field(
        description=(
            "True when the search could not run: the answer is the cached one to the same "
            "query, or says there is none (`Retry-After` says when to ask again)."
        )
    )
    degraded_reason: str | None = Field(None, description="Why the answer is degraded.")
    usage: UsageTokens
    timings_ms: dict[str, float]

    @classmethod
    def of(cls, result: QueryResult) -> Self:
        answer = result.answer
        payloads = {p.chunk_id: p.payload for p in result.passages}
        return cls(
            answer=answer.text,
            answerable=answer.answerable,
            abstain_reason=answer.abstain_reason,
            citations=[
                CitationPublic.of(c, payloads.get(c.chunk_id, {})) for c in answer.citations
            ],
            route=RoutePublic(name=result.route_name, reason=result.route_reason),
            degraded=result.degraded,
            degraded_reason=result.degraded_reason,
            usage=UsageTokens(
                prompt_tokens=answer.prompt_tokens, completion_tokens=answer.completion_tokens
            ),
            timings_ms=result.timings_ms,
        )
