"""Answers from any OpenAI-compatible chat completions endpoint (OpenAI, vLLM, llama.cpp, ...).

The official ``openai`` SDK (sync client) sends the prompt of :mod:`retrieval.generation.prompt`;
every failure of the call, or of the response, becomes :class:`GenerationUnavailableError` so a
dispatcher can fall back to another backend. The SDK retries nothing: falling back is faster than
retrying a server that is down, and it is the dispatcher's decision.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import openai
from openai.types.chat import (
    ChatCompletionChunk,
    ChatCompletionMessageParam,
    ChatCompletionSystemMessageParam,
    ChatCompletionUserMessageParam,
)

from retrieval.errors import GenerationUnavailableError
from retrieval.generation.base import (
    DEFAULT_OPTIONS,
    Answer,
    Delta,
    GenerationOptions,
    Passage,
    StreamEvent,
)
from retrieval.generation.extractive import ABSTAIN_TEXT, DEFAULT_MIN_SCORE, abstain
from retrieval.generation.prompt import (
    AnswerParser,
    ChatMessage,
    Prompt,
    count_tokens,
    grounded_prompt,
    parse_answer,
)

# Sent as the bearer token when no key is configured: servers without auth ignore it, and the
# SDK would otherwise read OPENAI_API_KEY from the environment (settings are the only source).
_NO_KEY = "unused"


class OpenAIBackend:
    """A :class:`~retrieval.generation.base.GenerationBackend` over the chat completions API.

    Args:
        base_url: The API root, ending in ``/v1`` (``http://127.0.0.1:8080/v1``).
        model: The model name the server knows; the backend's name is ``openai:<model>``.
        api_key: Bearer token; None for servers that need none.
        context_window: The model's context length, in ``cl100k_base`` tokens: prompt and
            answer together. Leave headroom for a model whose tokenizer is less dense.
        max_output_tokens: The most tokens an answer may take (the request's ``max_tokens``).
        timeout_s: For connecting and for each read: a whole answer, or the gap between two
            streamed pieces.
        temperature: Sampling temperature; 0 for the most faithful answer.
        min_score: With no passage scoring this much, abstain without calling the model; None
            when the evidence gate (retrieval.generation.evidence) has already decided.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        context_window: int = 8192,
        max_output_tokens: int = 512,
        timeout_s: float = 30.0,
        temperature: float = 0.0,
        min_score: float | None = DEFAULT_MIN_SCORE,
    ) -> None:
        if max_output_tokens < 1 or context_window <= max_output_tokens:
            raise ValueError(
                f"need 0 < max_output_tokens < context_window, got {max_output_tokens} "
                f"and {context_window}"
            )
        self._model = model
        self._context_window = context_window
        self._max_output_tokens = max_output_tokens
        self._temperature = temperature
        self._min_score = min_score
        self._client = openai.OpenAI(
            base_url=base_url,
            api_key=api_key or _NO_KEY,
            timeout=timeout_s,
            max_retries=0,
        )

    @property
    def name(self) -> str:
        """``openai:<model>``."""
        return f"openai:{self._model}"

    def generate(
        self,
        question: str,
        question_vector: Sequence[float],
        passages: Sequence[Passage],
        *,
        options: GenerationOptions = DEFAULT_OPTIONS,
    ) -> Answer:
        """Answer from the best passages that fit the context, citing them, or abstain.

        Abstains without a call when no passage reaches ``min_score``, or none fits. The
        request's ``max_tokens`` is the smaller of ``options.max_tokens`` and
        ``max_output_tokens``; its ``temperature`` is ``options.temperature`` when set.

        Raises:
            GenerationUnavailableError: the endpoint failed, timed out, refused the request or
                answered something that is no chat completion.
        """
        prompt = self._prompt(question, passages)
        if prompt is None:
            return abstain()
        try:
            completion = self._client.chat.completions.create(
                model=self._model,
                messages=_sdk_messages(prompt.messages),
                max_tokens=options.cap(self._max_output_tokens),
                temperature=self._temperature_for(options),
            )
        except (openai.OpenAIError, ValueError) as exc:
            raise self._unavailable(exc) from exc
        try:
            text = completion.choices[0].message.content or ""
            usage = completion.usage
            if not isinstance(text, str):
                raise TypeError(f"message content is {type(text).__name__}")
        except (AttributeError, IndexError, TypeError) as exc:
            # A 200 response whose body is no chat completion (the SDK validates loosely).
            raise self._unavailable(exc) from exc
        return parse_answer(
            text,
            prompt.passages,
            prompt_tokens=usage.prompt_tokens if usage else prompt.prompt_tokens,
            completion_tokens=usage.completion_tokens if usage else count_tokens(text),
        )

    def stream(
        self,
        question: str,
        question_vector: Sequence[float],
        passages: Sequence[Passage],
        *,
        options: GenerationOptions = DEFAULT_OPTIONS,
    ) -> Iterator[StreamEvent]:
        """:meth:`generate` over server-sent events: deltas as the model writes, then the answer.

        Usage comes from the server's final chunk (``stream_options.include_usage``); a server
        that sends none is counted with ``cl100k_base``.

        Raises:
            GenerationUnavailableError: as :meth:`generate`, before the first delta or between
                two.
        """
        prompt = self._prompt(question, passages)
        if prompt is None:
            yield Delta(ABSTAIN_TEXT)
            yield abstain()
            return
        try:
            chunks = self._client.chat.completions.create(
                model=self._model,
                messages=_sdk_messages(prompt.messages),
                max_tokens=options.cap(self._max_output_tokens),
                temperature=self._temperature_for(options),
                stream=True,
                stream_options={"include_usage": True},
            )
        except (openai.OpenAIError, ValueError) as exc:
            raise self._unavailable(exc) from exc
        parser = AnswerParser(prompt.passages)
        raw: list[str] = []
        prompt_tokens = completion_tokens = None
        with chunks:  # closes the connection when the caller stops early
            while (chunk := self._next(chunks)) is not None:
                try:
                    if chunk.usage is not None:
                        prompt_tokens = chunk.usage.prompt_tokens
                        completion_tokens = chunk.usage.completion_tokens
                    piece = chunk.choices[0].delta.content if chunk.choices else None
                except (AttributeError, IndexError, TypeError) as exc:
                    # A chunk missing its fields (the SDK validates loosely).
                    raise self._unavailable(exc) from exc
                if piece:
                    raw.append(piece)
                    if shown := parser.feed(piece):
                        yield Delta(shown)
        rest, answer = parser.finish(
            prompt_tokens=prompt.prompt_tokens if prompt_tokens is None else prompt_tokens,
            completion_tokens=(
                count_tokens("".join(raw)) if completion_tokens is None else completion_tokens
            ),
        )
        if rest:
            yield Delta(rest)
        yield answer

    def _prompt(self, question: str, passages: Sequence[Passage]) -> Prompt | None:
        return grounded_prompt(
            question,
            passages,
            min_score=self._min_score,
            context_window=self._context_window,
            max_output_tokens=self._max_output_tokens,
        )

    def _temperature_for(self, options: GenerationOptions) -> float:
        return self._temperature if options.temperature is None else options.temperature

    def _next(self, chunks: openai.Stream[ChatCompletionChunk]) -> ChatCompletionChunk | None:
        try:
            return next(chunks, None)
        except (openai.OpenAIError, ValueError) as exc:
            # ValueError: an event whose data is not JSON, or not a chunk.
            raise self._unavailable(exc) from exc

    def _unavailable(self, exc: Exception) -> GenerationUnavailableError:
        status = exc.status_code if isinstance(exc, openai.APIStatusError) else None
        what = f"answered HTTP {status}" if status else f"failed: {type(exc).__name__}: {exc}"
        return GenerationUnavailableError(
            f"{self.name} {what}", backend=self.name, status_code=status
        )


def _sdk_messages(messages: Sequence[ChatMessage]) -> list[ChatCompletionMessageParam]:
    converted: list[ChatCompletionMessageParam] = []
    for message in messages:
        if message["role"] == "system":
            converted.append(
                ChatCompletionSystemMessageParam(role="system", content=message["content"])
            )
        else:
            converted.append(
                ChatCompletionUserMessageParam(role="user", content=message["content"])
            )
    return converted
