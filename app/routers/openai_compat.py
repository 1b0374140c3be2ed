"""The OpenAI door, ``/v1/openai``: ``OpenAI(base_url=f"{shoal}/v1/openai", api_key=key)`` asks
a namespace with the clients users already have.

A ``model`` is a namespace's name, optionally with a route: ``docs``, ``docs:small``,
``docs:large`` (what ``route`` is on ``/v1/namespaces/{ns}/query``). Chat completions answer the
last ``user`` message with the platform's own answer (:mod:`app.services.query`, as ``/query``
does): earlier turns are not used, as retrieval takes one question and rewriting it from the
conversation would need a model call the extractive default does not have. The answer's
citations, ``answerable``, route and degradation ride on the message (on a stream, on the chunk
that finishes it: :class:`app.schemas.openai.ShoalAnswerFields`). Keys, scopes, limits, breakers
and degraded answers are the platform's; errors come in OpenAI's shape
(:mod:`app.gateway.openai_errors`).
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import structlog
from fastapi import APIRouter, Response
from sqlalchemy.orm import Session
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool

from app.errors import InvalidRequestError
from app.gateway.deps import CallerDep, PlatformDep, SessionDep, caller_quotas
from app.platform import Platform
from app.routers.query import closing, retry_after_headers, route_headers
from app.schemas.openai import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    Choice,
    ChunkChoice,
    ChunkDelta,
    CompletionUsage,
    EmbeddingList,
    EmbeddingPublic,
    EmbeddingRequest,
    EmbeddingUsage,
    FinalDelta,
    ModelList,
    ModelPublic,
)
from app.schemas.query import QueryAnswer
from app.services import namespaces
from app.services.embeddings import embed_texts
from app.services.keys import QUERY, Caller, authorize_tenant_scope
from app.services.query import answer_question, stream_answer
from app.services.questions import StreamEnd, StreamStart
from retrieval.generation.base import Delta, GenerationOptions
from retrieval.generation.routing import Requested

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/v1/openai", tags=["openai"])

ROUTES: tuple[Requested, ...] = ("small", "large", "auto")
# The longest question, as on /query (`SearchQuery.question`).
MAX_QUESTION_CHARS = 4000


def parse_model(model: str) -> tuple[str, Requested]:
    """``docs`` → (``docs``, ``auto``); ``docs:large`` → (``docs``, ``large``).

    A namespace's name never holds ``:``, so the split is unambiguous.

    Raises:
        InvalidRequestError: a route other than small, large or auto.
    """
    name, colon, route = model.partition(":")
    if not colon:
        return name, "auto"
    if route not in ROUTES:
        raise InvalidRequestError(
            f"model {model!r}: after ':' comes a route, small, large or auto", field="model"
        )
    return name, route


def question_of(messages: list[ChatMessage]) -> str:
    """The text of the last ``user`` message.

    Raises:
        InvalidRequestError: no user message; or the last one is empty, too long, or holds
            anything but text.
    """
    for index, message in reversed(list(enumerate(messages))):
        if message.role != "user":
            continue
        where = f"messages[{index}].content"
        content = message.content
        if isinstance(content, list):
            kinds = {part.type for part in content} - {"text"}
            if kinds:
                raise InvalidRequestError(
                    f"{where}: only text parts can be asked, not {', '.join(sorted(kinds))}",
                    field=where,
                )
            content = "\n".join(part.text or "" for part in content)
        question = (content or "").strip()
        if not question:
            raise InvalidRequestError(f"{where}: the question is empty", field=where)
        if len(question) > MAX_QUESTION_CHARS:
            raise InvalidRequestError(
                f"{where}: the question has {len(question)} characters; at most "
                f"{MAX_QUESTION_CHARS}",
                field=where,
            )
        return question
    raise InvalidRequestError("messages: no user message to answer", field="messages")


def generation_options(body: ChatCompletionRequest) -> GenerationOptions:
    """The request's ``max_tokens`` (or ``max_completion_tokens``, the smaller of the two when
    both are sent: each is a cap) and ``temperature``, for the route's model."""
    caps = [c for c in (body.max_tokens, body.max_completion_tokens) if c is not None]
    return GenerationOptions(max_tokens=min(caps, default=None), temperature=body.temperature)


@router.get("/models")
async def list_models(caller: CallerDep, session: SessionDep) -> ModelList:
    """The namespaces the key may ask, as OpenAI lists models."""
    return await run_in_threadpool(_list_models, caller, session)


def _list_models(caller: Caller, session: Session) -> ModelList:
    rows = namespaces.list_namespaces(session, access=authorize_tenant_scope(caller, QUERY))
    session.commit()  # no transaction outlives the thread (SQLite's write lock)
    return ModelList(data=[_model(n.name, n.created_at.timestamp()) for n in rows])


@router.get("/models/{model}")
async def retrieve_model(model: str, caller: CallerDep, session: SessionDep) -> ModelPublic:
    """One namespace, as OpenAI shows a model; another tenant's is as missing as a missing one."""
    return await run_in_threadpool(_retrieve_model, model, caller, session)


def _retrieve_model(model: str, caller: Caller, session: Session) -> ModelPublic:
    access = authorize_tenant_scope(caller, QUERY)
    namespace = namespaces.get_namespace(session, access=access, name=model)
    session.commit()
    return _model(namespace.name, namespace.created_at.timestamp())


def _model(name: str, created: float) -> ModelPublic:
    return ModelPublic(id=name, created=int(created))


@router.post(
    "/chat/completions",
    responses={200: {"content": {"text/event-stream": {}}, "description": "with stream: true"}},
)
async def chat_completions(
    body: ChatCompletionRequest,
    caller: CallerDep,
    session: SessionDep,
    platform: PlatformDep,
    response: Response,
) -> ChatCompletion:
    """The namespace's answer to the last user message, as a chat completion."""
    return await run_in_threadpool(_chat, body, caller, session, platform, response)


def _chat(
    body: ChatCompletionRequest,
    caller: Caller,
    session: Session,
    platform: Platform,
    response: Response,
) -> ChatCompletion:
    access = authorize_tenant_scope(caller, QUERY)
    name, route = parse_model(body.model)
    common: dict[str, Any] = {
        "access": access,
        "key_id": caller.key_id,
        "namespace_name": name,
        "question": question_of(body.messages),
        "top_k": body.top_k,
        "deps": platform.query,
        "filter": body.filter,
        "route": route,
        "quotas": caller_quotas(platform, caller),
        "options": generation_options(body),
    }
    chunks = _Chunks(f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), body.model)
    if body.stream:
        events = stream_answer(session, **common)
        start = next(events)  # retrieval ran: the route is known, and goes in the headers
        assert isinstance(start, StreamStart)  # noqa: S101 (stream_answer's contract)
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        return EventSourceResponse(  # type: ignore[return-value]  # FastAPI passes it through
            closing(_stream(chunks, events, include_usage=include_usage)),
            headers={
                **route_headers(start.route_name, start.route_reason),
                **retry_after_headers(start.retry_after_s),
            },
        )
    result = answer_question(session, **common)
    response.headers.update(route_headers(result.route_name, result.route_reason))
    response.headers.update(retry_after_headers(result.retry_after_s))
    answer = QueryAnswer.of(result)
    return ChatCompletion(
        id=chunks.id,
        created=chunks.created,
        model=chunks.model,
        choices=[Choice(message=AssistantMessage(content=answer.answer, **_fields(answer)))],
        usage=_usage(answer),
    )


@dataclass(frozen=True)
class _Chunks:
    """The ``chat.completion.chunk`` events of one streamed answer (one id, one time)."""

    id: str
    created: int
    model: str

    def event(
        self,
        delta: ChunkDelta | FinalDelta | None,
        *,
        finish: bool = False,
        usage: CompletionUsage | None = None,
    ) -> ServerSentEvent:
        """A chunk with ``delta`` (none: the usage-only chunk OpenAI sends last)."""
        choices = []
        if delta is not None:
            reason = "stop" if finish else None
            choices = [ChunkChoice(index=0, delta=delta, finish_reason=reason)]
        chunk = ChatCompletionChunk(
            id=self.id,
            object="chat.completion.chunk",
            created=self.created,
            model=self.model,
            choices=choices,
            usage=usage,
        )
        # Unset fields stay out: a text delta is `{"content": ...}`, as OpenAI sends it.
        return ServerSentEvent(data=chunk.model_dump_json(exclude_unset=True))


def _stream(
    chunks: _Chunks,
    events: Generator[StreamStart | Delta | StreamEnd],
    *,
    include_usage: bool,
) -> Generator[ServerSentEvent]:
    """The answer's chunks: the role, the text, the platform's fields with ``finish_reason``
    (and the usage, unless ``include_usage`` asks for it on a last chunk of its own), then
    ``[DONE]``. A failure once text was sent can only be said in the stream: an ``error``
    object, which OpenAI's clients raise, and no ``[DONE]``."""
    yield chunks.event(ChunkDelta(role="assistant", content=""))
    try:
        for event in events:
            if isinstance(event, Delta):
                yield chunks.event(ChunkDelta(content=event.text))
            elif isinstance(event, StreamEnd):
                answer = QueryAnswer.of(event.result)
                usage = _usage(answer)
                last = None if include_usage else usage
                yield chunks.event(FinalDelta(**_fields(answer)), finish=True, usage=last)
                if include_usage:
                    yield chunks.event(None, usage=usage)
        yield ServerSentEvent(data="[DONE]")
    except Exception as exc:  # the status is sent: an event is all that can still say it
        log.exception("stream_failed")
        error = {
            "message": f"generation failed: {exc}",
            "type": "server_error",
            "code": "generation-failed",
            "param": None,
        }
        yield ServerSentEvent(data=json.dumps({"error": error}))
    finally:
        events.close()


def _fields(answer: QueryAnswer) -> dict[str, Any]:
    """The platform's fields of ``answer`` (:class:`app.schemas.openai.ShoalAnswerFields`)."""
    return {
        "answerable": answer.answerable,
        "abstain_reason": answer.abstain_reason,
        "citations": answer.citations,
        "route": answer.route,
        "degraded": answer.degraded,
        "degraded_reason": answer.degraded_reason,
    }


def _usage(answer: QueryAnswer) -> CompletionUsage:
    prompt, completion = answer.usage.prompt_tokens, answer.usage.completion_tokens
    return CompletionUsage(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
    )


@router.post("/embeddings")
async def embeddings(
    body: EmbeddingRequest, caller: CallerDep, session: SessionDep, platform: PlatformDep
) -> EmbeddingList:
    """Vectors from the namespace's embedding model: those its questions are searched with."""
    return await run_in_threadpool(_embeddings, body, caller, session, platform)


def _embeddings(
    body: EmbeddingRequest, caller: Caller, session: Session, platform: Platform
) -> EmbeddingList:
    access = authorize_tenant_scope(caller, QUERY)
    name, _ = parse_model(body.model)  # a route changes nothing here
    dimension = platform.query.embedder.dimension
    if body.dimensions not in (None, dimension):
        raise InvalidRequestError(
            f"dimensions: the namespace's model gives {dimension}, not {body.dimensions}",
            field="dimensions",
        )
    texts = [body.input] if isinstance(body.input, str) else body.input
    embedded = embed_texts(
        session,
        access=access,
        key_id=caller.key_id,
        namespace_name=name,
        texts=texts,
        deps=platform.query,
        quotas=caller_quotas(platform, caller),
    )
    data = [
        EmbeddingPublic(index=i, embedding=_encoded(vector, body.encoding_format))
        for i, vector in enumerate(embedded.vectors)
    ]
    tokens = embedded.prompt_tokens
    return EmbeddingList(
        data=data,
        model=body.model,
        usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
    )


def _encoded(vector: npt.NDArray[np.float32], encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":  # what the openai client asks for by default
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    floats: list[float] = vector.tolist()
    return floats
