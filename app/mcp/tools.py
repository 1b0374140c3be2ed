"""The MCP door's tools: each a signature that tells an agent what it takes, and one call to
the services the HTTP routes call, answered in the HTTP routes' shapes.

A failure is a tool error (``isError``) whose text is the HTTP problem's ``detail`` and whose
structured content is the problem itself (``type``, ``title``, ``status``, ``detail``, and
``retry_after_s`` or ``field`` where HTTP sends them): an agent reads the same message a client
of ``/v1`` would. Each call counts against the key's request budget first, as an HTTP request
does; ``answer`` reserves its model tokens as ``/query`` does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import anyio.to_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session
from starlette.requests import Request

from app.errors import AuthenticationError
from app.gateway.deps import admit, caller_quotas
from app.gateway.problems import Problem, describe
from app.mcp.auth import caller_of
from app.metrics import MCP_TOOL_CALLS
from app.platform import Platform
from app.schemas.documents import DocumentIn, JobPublic, UploadAccepted
from app.schemas.namespaces import NamespacePublic
from app.schemas.query import QueryAnswer, SearchResults
from app.services import jobs, namespaces
from app.services.documents import upload
from app.services.keys import (
    QUERY,
    WRITE,
    Caller,
    authorize_tenant_reader,
    authorize_tenant_scope,
)
from app.services.query import answer_question, search_namespace

ToolContext = Context[Platform, Request]
Work = Callable[[Session, Caller, Platform], BaseModel]

NamespaceName = Annotated[
    str,
    Field(
        pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$",
        description="The namespace's name, as list_namespaces gives it.",
    ),
]
Filter = Annotated[
    dict[str, Any] | None,  # Any: a JSON filter
    Field(
        description=(
            "Optional metadata filter on the namespace's indexed_fields (list_namespaces shows "
            'them): a condition {"field": F, OP: V} with OP one of eq, in (a list), range '
            "({gt, gte, lt, lte}), exists (true/false), or {and: [...]}, {or: [...]}, "
            '{not: {...}} of filters. Example: {"and": [{"field": "year", "range": '
            '{"gte": 2015}}, {"field": "kind", "in": ["trial", "review"]}]}'
        ),
    ),
]


class Namespaces(BaseModel):
    namespaces: list[NamespacePublic] = Field(
        description="The namespaces this key may use, by name."
    )


async def list_namespaces(ctx: ToolContext) -> Annotated[CallToolResult, Namespaces]:
    """List the namespaces (document collections) this API key may search and add to, with
    the metadata fields each can filter on (indexed_fields)."""

    def work(session: Session, caller: Caller, _: Platform) -> Namespaces:
        rows = namespaces.list_namespaces(session, access=authorize_tenant_reader(caller))
        return Namespaces(
            namespaces=[NamespacePublic.model_validate(n, from_attributes=True) for n in rows]
        )

    return await _run(ctx, "list_namespaces", work)


async def search(
    ctx: ToolContext,
    namespace: NamespaceName,
    query: Annotated[
        str,
        Field(
            min_length=1,
            max_length=4000,
            description="What to look for, in natural language (a question or a topic).",
        ),
    ],
    top_k: Annotated[
        int | None,
        Field(ge=1, le=50, description="How many passages to return, 1-50; unset: 5."),
    ] = None,
    filter: Filter = None,
) -> Annotated[CallToolResult, SearchResults]:
    """Find the passages of a namespace's documents that best match a query, best first, each
    with its text, score (cosine similarity), document id, filename and position. Generates no
    answer: read the passages yourself."""

    def work(session: Session, caller: Caller, platform: Platform) -> SearchResults:
        found = search_namespace(
            session,
            access=authorize_tenant_scope(caller, QUERY),
            key_id=caller.key_id,
            namespace_name=namespace,
            question=query,
            top_k=top_k,
            deps=platform.query,
            filter=filter,
        )
        return SearchResults.of(found)

    return await _run(ctx, "search", work)


async def answer(
    ctx: ToolContext,
    namespace: NamespaceName,
    question: Annotated[
        str,
        Field(min_length=1, max_length=4000, description="The question to answer."),
    ],
    filter: Filter = None,
) -> Annotated[CallToolResult, QueryAnswer]:
    """Answer a question from a namespace's documents, citing the passages it rests on. When
    the documents do not hold the answer, answerable is false and the answer says so: do not
    answer from elsewhere then. route says which model answered and why."""

    def work(session: Session, caller: Caller, platform: Platform) -> QueryAnswer:
        result = answer_question(
            session,
            access=authorize_tenant_scope(caller, QUERY),
            key_id=caller.key_id,
            namespace_name=namespace,
            question=question,
            top_k=None,
            deps=platform.query,
            filter=filter,
            quotas=caller_quotas(platform, caller),
        )
        return QueryAnswer.of(result)

    return await _run(ctx, "answer", work)


async def add_documents(
    ctx: ToolContext,
    namespace: NamespaceName,
    documents: Annotated[
        list[DocumentIn],
        Field(
            min_length=1,
            max_length=1000,
            description=(
                "The documents: each with text (or content_base64 for a file's bytes, e.g. a "
                "PDF; then give its filename), and optional filename, metadata and "
                "external_id."
            ),
        ),
    ],
) -> Annotated[CallToolResult, UploadAccepted]:
    """Add documents to a namespace (needs the write scope). Returns at once with a job id:
    the documents are parsed and indexed in the background; follow them with job_status.
    Content already in the namespace is reported as a duplicate, not added twice."""

    def work(session: Session, caller: Caller, platform: Platform) -> UploadAccepted:
        access = authorize_tenant_scope(caller, WRITE)
        found = namespaces.get_namespace(
            session, access=access, name=namespace, embedded_by=platform.embedder.model_id
        )
        session.commit()  # SQLite's write lock: not held while the items are checked
        result = upload(
            session,
            namespace=found,
            items=[doc.item(i) for i, doc in enumerate(documents)],
            enqueue=platform.enqueue,
            ingestion=platform.settings.ingestion,
        )
        return UploadAccepted.model_validate(result.response)

    return await _run(ctx, "add_documents", work)


async def job_status(
    ctx: ToolContext,
    job_id: Annotated[
        str,
        Field(min_length=1, max_length=64, description="The job id add_documents returned."),
    ],
) -> Annotated[CallToolResult, JobPublic]:
    """The progress of an add_documents job (needs the write scope): queued, running, then
    succeeded, partial or failed, with per-state counts and each document's state and, if it
    failed, why."""

    def work(session: Session, caller: Caller, _: Platform) -> JobPublic:
        access = authorize_tenant_scope(caller, WRITE)
        return JobPublic.of(jobs.get_job(session, access=access, job_id=job_id))

    return await _run(ctx, "job_status", work)


# Who sees each tool listed (a key without the scope is refused by the tool all the same).
NEEDS: dict[str, Callable[[Caller], bool]] = {
    "list_namespaces": lambda c: c.tenant_id is not None and (c.has(QUERY) or c.has(WRITE)),
    "search": lambda c: c.tenant_id is not None and c.has(QUERY),
    "answer": lambda c: c.tenant_id is not None and c.has(QUERY),
    "add_documents": lambda c: c.tenant_id is not None and c.has(WRITE),
    "job_status": lambda c: c.tenant_id is not None and c.has(WRITE),
}
_READ = ToolAnnotations(read_only_hint=True, open_world_hint=False)
_WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)


def add_tools(server: MCPServer[Platform]) -> None:
    server.add_tool(list_namespaces, title="List namespaces", annotations=_READ)
    server.add_tool(search, title="Search a namespace", annotations=_READ)
    server.add_tool(answer, title="Answer from a namespace", annotations=_READ)
    server.add_tool(add_documents, title="Add documents", annotations=_WRITE)
    server.add_tool(job_status, title="Follow an add_documents job", annotations=_READ)


async def _run(ctx: ToolContext, tool: str, work: Work) -> CallToolResult:
    """Admit the call against the caller's request budget, then ``work`` in a worker thread
    with a database session; a failure becomes the tool error of its HTTP problem."""
    request = ctx.request_context.request
    platform = ctx.request_context.lifespan_context
    try:
        if not isinstance(request, Request):  # in process, not over HTTP: no key came
            raise AuthenticationError("the MCP door takes requests over HTTP, with an API key")
        caller = caller_of(request)
        result = await anyio.to_thread.run_sync(_call, platform, caller, request, work)
    except Exception as exc:  # every error is told as the HTTP door tells it
        problem = describe(exc, where=f"mcp:{tool}")
        MCP_TOOL_CALLS.labels(tool, problem.type.slug).inc()
        return _tool_error(problem)
    MCP_TOOL_CALLS.labels(tool, "ok").inc()
    return CallToolResult(
        content=[TextContent(type="text", text=result.model_dump_json())],
        structured_content=result.model_dump(mode="json"),
    )


def _call(platform: Platform, caller: Caller, request: Request, work: Work) -> BaseModel:
    admit(platform, caller, request.state)
    with platform.sessions() as session:
        return work(session, caller, platform)


def _tool_error(problem: Problem) -> CallToolResult:
    body: dict[str, Any] = {  # Any: JSON
        "type": problem.type.uri,
        "title": problem.type.title,
        "status": problem.type.status,
        "detail": problem.detail,
        **problem.extensions,
    }
    if problem.retry_after_s is not None:
        body["retry_after_s"] = problem.retry_after_s
    return CallToolResult(
        content=[TextContent(type="text", text=problem.detail)],
        structured_content=body,
        is_error=True,
    )
