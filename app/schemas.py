"""Request and response bodies of the HTTP API (``...Create``/``...Update``/``...Public``)."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from app.errors import InvalidRequestError
from app.services.answers import QueryResult
from app.services.documents import UploadItem
from app.services.jobs import JobStatus
from retrieval.config import Fusion, RoutesConfig, SearchMode
from retrieval.generation.base import AbstainReason, Citation, Passage
from retrieval.search import Retrieved

Name = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$"),
    Field(description="Lower-case letters, digits, `-` and `_`; 1-63 characters."),
]
FieldType = Literal["keyword", "integer", "float", "bool", "datetime"]
Scope = Literal["admin", "write", "query"]


class Strict(BaseModel):
    """Request bodies refuse unknown fields: a typo must not be silently ignored."""

    model_config = ConfigDict(extra="forbid")


class Quotas(Strict):
    """Per-minute budgets. On a PATCH, `null` removes one (a tenant then falls back to the
    server's default, `SHOAL_LIMITS__DEFAULT_...`; a key to its tenant's alone)."""

    requests_per_minute: int | None = Field(
        None, ge=1, le=10**9, description="Requests per minute, counted on every request."
    )
    tokens_per_minute: int | None = Field(
        None,
        ge=1,
        le=10**12,
        description=(
            "Model tokens per minute (prompt + answer): reserved before generation, "
            "settled with the real usage after."
        ),
    )


class TenantCreate(Strict):
    name: Annotated[str, StringConstraints(min_length=1, max_length=128, strip_whitespace=True)]
    quotas: Quotas = Quotas()


class TenantUpdate(Strict):
    quotas: Quotas


class TenantPublic(BaseModel):
    id: str
    name: str
    quotas: dict[str, Any]
    created_at: dt.datetime


class KeyCreate(Strict):
    name: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    scopes: list[Scope] = Field(min_length=1)
    quotas: Quotas = Field(
        Quotas(), description="The key's own budgets, enforced on top of its tenant's."
    )
    namespaces: list[Name] | None = Field(
        None,
        min_length=1,
        max_length=1000,
        description=(
            "Limit a write or query key to these of its tenant's namespaces; any other "
            "answers as a missing one, on every door (HTTP, OpenAI, MCP). Unset: all of them."
        ),
    )


class KeyUpdate(Strict):
    quotas: Quotas


class KeyPublic(BaseModel):
    id: str
    tenant_id: str | None
    name: str
    scopes: list[str]
    quotas: dict[str, Any]
    namespaces: list[str] | None = Field(description="The namespaces it is limited to; null: all.")
    created_at: dt.datetime
    revoked_at: dt.datetime | None


class KeyCreated(KeyPublic):
    key: str = Field(description="The whole key. Shown only in this response: store it now.")


class UsagePublic(BaseModel):
    day: dt.date
    key_id: str
    requests: int
    prompt_tokens: int
    completion_tokens: int


class SearchSettings(Strict):
    """How a namespace's queries search; unset fields take the server's defaults
    (``SHOAL_RETRIEVAL__...``). A query may override ``mode`` and ``rerank``.

    The fields of :class:`retrieval.config.SearchOptions`, each optional (a test holds them
    equal, bounds included)."""

    mode: SearchMode | None = Field(
        None,
        description=(
            "`hybrid`: dense and BM25 rankings merged as `fusion` says; `dense`: the "
            "embedding alone; `lexical`: BM25 alone."
        ),
    )
    fusion: Fusion | None = Field(
        None,
        description="`dbsf` (distribution-based score fusion) or `rrf` (reciprocal rank fusion).",
    )
    candidates: int | None = Field(
        None, ge=10, le=1000, description="Points each signal contributes to hybrid fusion."
    )
    rrf_k: int | None = Field(None, ge=1, le=1000, description="The k of `rrf` fusion.")
    dense_weight: float | None = Field(
        None, ge=0, le=10, description="Dense weight (`rrf` only; `dbsf` takes none)."
    )
    lexical_weight: float | None = Field(
        None, ge=0, le=10, description="BM25 weight (`rrf` only; `dbsf` takes none)."
    )
    rerank: bool | None = Field(
        None, description="Reorder the candidates with the server's reranker (if configured)."
    )
    min_score: float | None = Field(
        None,
        ge=-1,
        le=1,
        description=(
            "Abstain unless the best passage's cosine reaches this, instead of the evidence "
            "gate's decision (`SHOAL_RETRIEVAL__MIN_SCORE`)."
        ),
    )
    evidence_threshold: float | None = Field(
        None,
        ge=0,
        le=1,
        description=(
            "The evidence gate's bar for this namespace: lower answers more, higher abstains "
            "more (`SHOAL_RETRIEVAL__EVIDENCE_THRESHOLD`)."
        ),
    )


class NamespaceCreate(Strict):
    name: Name
    embedding_model: str | None = Field(None, description="Unset: the server's model.")
    indexed_fields: dict[str, FieldType] = Field(default_factory=dict)
    routes: RoutesConfig | None = Field(
        None, description="`small`/`large` generation routes; unset: the server's default."
    )
    search: SearchSettings = Field(default_factory=SearchSettings)


class NamespaceUpdate(Strict):
    indexed_fields: dict[str, FieldType] | None = None
    routes: RoutesConfig | None = Field(
        None, description="Replaces the routes; `{}` returns to the server's default."
    )
    search: SearchSettings | None = None


class NamespacePublic(BaseModel):
    id: str
    name: str
    embedding_model: str
    embedding_dimension: int
    indexed_fields: dict[str, str]
    routes: dict[str, Any]
    search: dict[str, Any]
    created_at: dt.datetime


class DocumentIn(Strict):
    text: str | None = Field(None, description="The document as text; or `content_base64`.")
    content_base64: str | None = Field(None, description="The file's bytes, base64-encoded.")
    filename: str | None = Field(None, max_length=512)
    metadata: dict[str, Any] = Field(default_factory=dict)
    external_id: str | None = Field(
        None,
        max_length=256,
        description="Your id for the document; new content under an id in use is its next "
        "version, which replaces the previous one once indexed.",
    )

    def item(self, index: int) -> UploadItem:
        """The upload item this document is, the ``index``-th of its request.

        Raises:
            InvalidRequestError: neither or both of text and content_base64, or bad base64.
        """
        if (self.text is None) == (self.content_base64 is None):
            raise InvalidRequestError(
                "give exactly one of text and content_base64", field=f"documents.{index}"
            )
        if self.text is not None:
            data = self.text.encode()
            declared = "text/plain" if self.filename is None else None
        else:
            try:
                data = base64.b64decode(self.content_base64 or "", validate=True)
            except binascii.Error as exc:
                raise InvalidRequestError(
                    "content_base64 is not valid base64", field=f"documents.{index}.content_base64"
                ) from exc
            declared = None
        return UploadItem(
            data=data,
            filename=self.filename,
            declared_type=declared,
            metadata=self.metadata,
            external_id=self.external_id,
        )


class DocumentsUpload(Strict):
    documents: list[DocumentIn] = Field(min_length=1, max_length=1000)


class UploadedDocumentPublic(BaseModel):
    id: str
    state: str
    duplicate: bool
    filename: str | None
    version: int = Field(
        description="1, or the next version when the `external_id` is already in the namespace."
    )


class UploadAccepted(BaseModel):
    job_id: str
    documents: list[UploadedDocumentPublic]


class DocumentPublic(BaseModel):
    id: str
    filename: str | None
    media_type: str
    external_id: str | None
    version: int = Field(description="Counts the uploads under one `external_id`, from 1.")
    metadata: dict[str, Any]
    size_bytes: int
    state: str
    reason: str | None
    chunk_count: int
    created_at: dt.datetime
    updated_at: dt.datetime


class DocumentPage(BaseModel):
    items: list[DocumentPublic]
    total: int
    limit: int
    offset: int


class JobDocumentPublic(BaseModel):
    id: str
    state: str
    reason: str | None = None
    duplicate: bool
    filename: str | None


class JobPublic(BaseModel):
    id: str
    namespace_id: str
    state: Literal["queued", "running", "succeeded", "partial", "failed"]
    counts: dict[str, int]
    documents: list[JobDocumentPublic]
    created_at: dt.datetime

    @classmethod
    def of(cls, status: JobStatus) -> Self:
        return cls(
            id=status.job.id,
            namespace_id=status.job.namespace_id,
            state=status.state,
            counts=status.counts,
            documents=[
                JobDocumentPublic(
                    id=doc.id,
                    state=doc.state.value,
                    reason=doc.reason,
                    duplicate=duplicate,
                    filename=doc.filename,
                )
                for doc, duplicate in status.documents
            ],
            created_at=status.job.created_at,
        )


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


class _FaultCreate(Strict):
    target: Literal["vector_store", "embedder", "generator", "cache", "broker"]
    ttl_s: float | None = Field(
        None, gt=0, le=7 * 24 * 3600, description="Lifetime of the fault. Unset: until cleared."
    )


class ErrorFaultCreate(_FaultCreate):
    """A fault drill (`SHOAL_ENABLE_FAULTS=true`): the target's calls fail, as its outage fails
    them."""

    mode: Literal["error"]
    delay_ms: int | None = Field(None, ge=1, le=600_000, description="Wait before each call first.")


class DelayFaultCreate(_FaultCreate):
    """A fault drill (`SHOAL_ENABLE_FAULTS=true`): the target's calls wait, then go on."""

    mode: Literal["delay"]
    delay_ms: int = Field(ge=1, le=600_000, description="Wait before each call.")


# The schema says what `mode` requires (a delay needs its duration), so a client's validator
# knows it too; the router reads `mode` as the discriminator.
FaultCreate = ErrorFaultCreate | DelayFaultCreate


class FaultPublic(BaseModel):
    target: str
    mode: str
    delay_ms: int
    expires_at: dt.datetime | None
