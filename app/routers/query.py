"""``/v1/namespaces/{ns}/query``: a cited answer, or a plain statement that there is none."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from app.gateway.deps import CallerDep, PlatformDep, SessionDep
from app.schemas import CitationPublic, QueryAnswer, QueryRequest, RoutePublic, UsageTokens
from app.services.keys import QUERY, authorize_tenant_scope
from app.services.query import answer_question

router = APIRouter(prefix="/v1/namespaces/{ns}", tags=["query"])


@router.post("/query")
def query(
    ns: str, body: QueryRequest, caller: CallerDep, session: SessionDep, platform: PlatformDep
) -> QueryAnswer:
    result = answer_question(
        session,
        tenant_id=authorize_tenant_scope(caller, QUERY),
        key_id=caller.key_id,
        namespace_name=ns,
        question=body.question,
        top_k=body.top_k,
        deps=platform.query,
    )
    answer = result.answer
    payloads = {p.chunk_id: p.payload for p in result.passages}
    return QueryAnswer(
        answer=answer.text,
        answerable=answer.answerable,
        citations=[
            CitationPublic(
                document_id=c.document_id,
                chunk_id=c.chunk_id,
                text=c.text,
                score=c.score,
                **_citation_source(payloads.get(c.chunk_id, {})),
            )
            for c in answer.citations
        ],
        route=RoutePublic(name=result.route_name, reason=result.route_reason),
        degraded=False,
        usage=UsageTokens(
            prompt_tokens=answer.prompt_tokens, completion_tokens=answer.completion_tokens
        ),
        timings_ms=result.timings_ms,
    )


def _citation_source(payload: dict[str, Any]) -> dict[str, Any]:
    """Where a cited chunk comes from, for readers: file, position, title, section, page."""
    return {key: payload.get(key) for key in ("filename", "ordinal", "title", "section", "page")}
