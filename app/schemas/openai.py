"""Request and response bodies of the OpenAI door (``/v1/openai``), in OpenAI's shapes.

Top-level request fields are OpenAI's (those clients send by default are accepted, honoured or
ignored as documented), and anything else is refused (``422``), as on every Shoal route.
Messages take any extra field: a client may send back an assistant message it received, with
this door's own fields on it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints

from app.schemas.common import Strict
from app.schemas.query import CitationPublic, RoutePublic
from retrieval.generation.base import AbstainReason

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class ContentPart(BaseModel):
    """A part of a message's content; only ``text`` parts can carry a question."""

    type: str = Field(max_length=64)
    text: str | None = None


class ChatMessage(BaseModel):
    role: Role
    content: str | list[ContentPart] | None = None


class StreamOptions(BaseModel):
    include_usage: bool = Field(
        False, description="Usage on a last chunk with no choices, as OpenAI sends it."
    )


class ChatCompletionRequest(Strict):
    model: str = Field(
        min_length=1,
        max_length=80,
        description=(
            "A namespace's name, optionally with a route: `docs`, `docs:small`, `docs:large` "
            "(`docs:auto` is `docs`)."
        ),
    )
    messages: list[ChatMessage] = Field(
        min_length=1,
        max_length=1000,
        description="The last `user` message is the question; earlier turns are not used.",
    )
    stream: bool = Field(False, description="`chat.completion.chunk` events, then `[DONE]`.")
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(
        None,
        ge=1,
        le=32_768,
        description="Lowers the route's `max_output_tokens` (never raises it), as on `/query`.",
    )
    max_completion_tokens: int | None = Field(
        None, ge=1, le=32_768, description="As max_tokens; with both, the smaller applies."
    )
    temperature: float | None = Field(
        None, ge=0, le=2, description="The route model's sampling temperature, as on `/query`."
    )
    top_p: float | None = Field(None, ge=0, le=1, description="Accepted, not used.")
    n: int | None = Field(None, ge=1, le=1, description="One answer per request.")
    stop: str | list[str] | None = Field(None, description="Accepted, not used.")
    presence_penalty: float | None = Field(None, ge=-2, le=2, description="Accepted, not used.")
    frequency_penalty: float | None = Field(None, ge=-2, le=2, description="Accepted, not used.")
    seed: int | None = Field(None, description="Accepted, not used.")
    user: str | None = Field(None, max_length=256, description="Accepted, not used.")
    # Shoal's own, as on /v1/namespaces/{ns}/query (the openai client sends them as extra_body).
    top_k: int | None = Field(None, ge=1, le=50, description="Shoal: passages to answer from.")
    filter: dict[str, Any] | None = Field(
        None, description="Shoal: a metadata filter, as on `/v1/namespaces/{ns}/query`."
    )


class ShoalAnswerFields(BaseModel):
    """What the platform says beside the text: on the message, and on a stream's last chunk."""

    answerable: bool
    abstain_reason: AbstainReason | None
    citations: list[CitationPublic] = Field(
        description="`[n]` in the answer text cites `citations[n - 1]`."
    )
    route: RoutePublic
    degraded: bool = Field(
        description="The search could not run: a cached answer, or one saying there is none."
    )
    degraded_reason: str | None


class AssistantMessage(ShoalAnswerFields):
    role: Literal["assistant"] = "assistant"
    content: str
    refusal: None = None


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop"] = "stop"
    logprobs: None = None


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: CompletionUsage


class ChunkDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class FinalDelta(ShoalAnswerFields):
    """The delta of the chunk that finishes the answer: no text, the platform's fields."""


class ChunkChoice(BaseModel):
    index: int = 0
    delta: ChunkDelta | FinalDelta
    finish_reason: Literal["stop"] | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: CompletionUsage | None = None


class ModelPublic(BaseModel):
    """A namespace, as OpenAI lists a model."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "shoal"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelPublic]


EmbeddingText = Annotated[str, StringConstraints(min_length=1, max_length=16_000)]


class EmbeddingRequest(Strict):
    model: str = Field(
        min_length=1, max_length=80, description="The namespace whose embedding model is used."
    )
    input: EmbeddingText | Annotated[list[EmbeddingText], Field(min_length=1, max_length=2048)] = (
        Field(description="A text or up to 2048 texts (token arrays are not accepted).")
    )
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="`base64`: the little-endian float32 bytes of each vector."
    )
    dimensions: int | None = Field(
        None, ge=1, le=65_536, description="Only the model's own dimension is accepted."
    )
    user: str | None = Field(None, max_length=256, description="Accepted, not used.")


class EmbeddingPublic(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingPublic]
    model: str
    usage: EmbeddingUsage
