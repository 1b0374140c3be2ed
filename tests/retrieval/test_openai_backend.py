"""The OpenAI-compatible backend against llama.cpp's real server, and the prompt it sends.

Prompt packing and reply parsing are pure functions of :mod:`retrieval.generation.prompt`;
the server tests run SmolLM2-135M, which answers a short clear context correctly but rarely
writes citation markers (the backend then cites every passage it showed the model). Which
passages an answer cites, marker by marker, is ``test_citing.py``'s.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Generator

import pytest

from retrieval.errors import GenerationUnavailableError
from retrieval.generation.base import Answer, Delta, Passage, StreamEvent
from retrieval.generation.extractive import ABSTAIN_TEXT, DEFAULT_MIN_SCORE, abstain
from retrieval.generation.openai import OpenAIBackend
from retrieval.generation.prompt import (
    SENTINEL,
    SYSTEM_PROMPT,
    AnswerParser,
    build_prompt,
    count_tokens,
    parse_answer,
)
from tests.conftest import free_port
from tests.llm import LlmRecorder, assert_cites_what_the_model_named, shown_passages
from tests.retrieval.conftest import BANANA, EIFFEL, NO_VECTOR, QUESTION

# SmolLM2's tokenizer needs ~14 % more tokens than cl100k: 1536 stays inside the server's 2048.
SERVER_CONTEXT = 1536


def backend(base_url: str, *, timeout_s: float = 120.0) -> OpenAIBackend:
    return OpenAIBackend(
        base_url,
        "smollm2",
        context_window=SERVER_CONTEXT,
        max_output_tokens=64,
        timeout_s=timeout_s,
    )


def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}/v1"


def passage(chunk_id: str, score: float, *, llm_tokens: int | None = None) -> Passage:
    payload = {} if llm_tokens is None else {"llm_tokens": llm_tokens}
    return Passage(chunk_id, f"doc-{chunk_id}", f"Text of {chunk_id}.", score, payload)


# --- the real server --------------------------------------------------------------------------


def assert_cites_what_it_wrote(recorder: LlmRecorder, answer: Answer) -> None:
    """The answer cites what the model's recorded reply named (all it was shown if nothing)."""
    exchange = recorder.only()
    assert_cites_what_the_model_named(
        exchange.reply,
        shown_passages(exchange.user)[0],
        answerable=answer.answerable,
        answer_text=answer.text,
        cited=[c.text for c in answer.citations],
    )


@pytest.mark.slow
def test_a_clear_context_is_answered_from_the_passages_shown(
    llama_recorder: LlmRecorder,
) -> None:
    answer = backend(llama_recorder.url).generate(QUESTION, NO_VECTOR, [BANANA, EIFFEL])

    assert answer.answerable
    assert "1889" in answer.text
    assert_cites_what_it_wrote(llama_recorder, answer)
    assert answer.prompt_tokens > 0
    assert answer.completion_tokens > 0


@pytest.mark.slow
def test_stream_yields_deltas_then_one_answer_of_the_deltas_joined(
    llama_recorder: LlmRecorder, request: pytest.FixtureRequest
) -> None:
    started = time.perf_counter()
    events: list[StreamEvent] = []
    for event in backend(llama_recorder.url).stream(QUESTION, NO_VECTOR, [EIFFEL, BANANA]):
        if not events:
            # Reported, not asserted (junit XML, legacy family): no test gates on time.
            ttft_ms = round(1000 * (time.perf_counter() - started))
            request.node.user_properties.append(("time_to_first_delta_ms", ttft_ms))
        events.append(event)

    *deltas, answer = events
    assert len(deltas) >= 2
    assert all(isinstance(d, Delta) for d in deltas)
    assert isinstance(answer, Answer)
    assert answer.text == "".join(d.text for d in deltas if isinstance(d, Delta))
    assert answer.answerable
    assert "1889" in answer.text
    assert_cites_what_it_wrote(llama_recorder, answer)
    assert answer.prompt_tokens > 0
    assert answer.completion_tokens > 0


@pytest.mark.slow
def test_stream_stopped_early_leaves_the_server_serving(llama_server: str) -> None:
    llm = backend(llama_server)
    events = llm.stream(QUESTION, NO_VECTOR, [EIFFEL])
    assert isinstance(events, Generator)  # what a caller closes when its client goes away
    assert isinstance(next(events), Delta)
    events.close()

    assert llm.generate(QUESTION, NO_VECTOR, [EIFFEL]).answerable


# --- failures and abstention, no model involved ------------------------------------------------


def test_weak_evidence_abstains_without_calling_the_model() -> None:
    # Nothing listens on the port: any call would raise GenerationUnavailableError.
    llm = backend(closed_port_url())
    weak = [passage("a", DEFAULT_MIN_SCORE - 0.01), passage("b", 0.1)]

    answer = llm.generate(QUESTION, NO_VECTOR, weak)
    streamed = list(llm.stream(QUESTION, NO_VECTOR, weak))

    assert answer == abstain("below_min_score")
    assert streamed == [Delta(ABSTAIN_TEXT), answer]
    assert llm.generate(QUESTION, NO_VECTOR, []) == answer


@pytest.mark.timeout(20)  # a hang guard: refusal is immediate, the SDK must not retry for long
def test_an_unreachable_endpoint_raises_generation_unavailable() -> None:
    llm = backend(closed_port_url(), timeout_s=2.0)

    with pytest.raises(GenerationUnavailableError) as raised:
        llm.generate(QUESTION, NO_VECTOR, [EIFFEL])
    with pytest.raises(GenerationUnavailableError):
        list(llm.stream(QUESTION, NO_VECTOR, [EIFFEL]))

    assert raised.value.backend == "openai:smollm2"
    assert raised.value.status_code is None


@pytest.mark.slow
def test_a_refused_request_raises_generation_unavailable_with_its_status(
    llama_server: str,
) -> None:
    # The server's root, not its /v1: a real 404 from a real server.
    llm = backend(llama_server.removesuffix("/v1"))

    with pytest.raises(GenerationUnavailableError) as raised:
        llm.generate(QUESTION, NO_VECTOR, [EIFFEL])
    with pytest.raises(GenerationUnavailableError):
        list(llm.stream(QUESTION, NO_VECTOR, [EIFFEL]))

    assert raised.value.status_code == 404


def test_name_says_openai_and_the_model() -> None:
    assert backend(closed_port_url()).name == "openai:smollm2"


def test_a_context_too_small_for_the_answer_is_refused() -> None:
    with pytest.raises(ValueError, match="max_output_tokens"):
        OpenAIBackend("http://127.0.0.1:1/v1", "m", context_window=100, max_output_tokens=100)


# --- prompt packing ---------------------------------------------------------------------------


def test_a_small_budget_packs_only_the_best_passages() -> None:
    # Each passage costs its recorded llm_tokens (100) plus "[n]\n" (3 tokens) and "\n\n" (1).
    # Best first, as ranked (a reranker's order need not follow the cosine scores).
    passages = [passage(c, s, llm_tokens=100) for c, s in [("a", 0.5), ("b", 0.9), ("c", 0.7)]]
    fixed = count_tokens(SYSTEM_PROMPT) + count_tokens(f"Question: {QUESTION}")
    per_passage = 100 + count_tokens("[1]\n") + count_tokens("\n\n")
    assert per_passage == 104
    max_output = 50

    exact_two = build_prompt(
        QUESTION,
        passages,
        context_window=fixed + 2 * per_passage + max_output,
        max_output_tokens=max_output,
    )
    one_short = build_prompt(
        QUESTION,
        passages,
        context_window=fixed + 2 * per_passage + max_output - 1,
        max_output_tokens=max_output,
    )
    none_fit = build_prompt(
        QUESTION, passages, context_window=fixed + max_output + 103, max_output_tokens=max_output
    )

    assert [p.chunk_id for p in exact_two.passages] == ["a", "b"]
    assert exact_two.prompt_tokens == fixed + 2 * per_passage
    assert [p.chunk_id for p in one_short.passages] == ["a"]
    assert none_fit.passages == []


def test_prompt_numbers_passages_in_rank_order_and_asks_for_the_sentinel() -> None:
    prompt = build_prompt(QUESTION, [BANANA, EIFFEL], context_window=4096, max_output_tokens=256)

    system, user = prompt.messages
    assert system == {"role": "system", "content": SYSTEM_PROMPT}
    assert SENTINEL in SYSTEM_PROMPT
    assert user["role"] == "user"
    assert user["content"] == f"[1]\n{BANANA.text}\n\n[2]\n{EIFFEL.text}\n\nQuestion: {QUESTION}"
    assert prompt.passages == [BANANA, EIFFEL]


def test_passage_without_recorded_tokens_is_counted() -> None:
    counted = build_prompt(QUESTION, [EIFFEL], context_window=4096, max_output_tokens=256)
    recorded = build_prompt(
        QUESTION,
        [dataclasses.replace(EIFFEL, payload={"llm_tokens": 500})],
        context_window=4096,
        max_output_tokens=256,
    )

    assert recorded.prompt_tokens - counted.prompt_tokens == 500 - count_tokens(EIFFEL.text)


# --- reading the reply ------------------------------------------------------------------------

THREE = [passage("p1", 0.9), passage("p2", 0.8), passage("p3", 0.7)]


def parse(text: str, passages: list[Passage] = THREE) -> Answer:
    return parse_answer(text, passages, prompt_tokens=7, completion_tokens=3)


def test_markers_are_renumbered_in_order_of_first_citation() -> None:
    answer = parse("Cats purr [3]. Dogs bark [1][3]. Both sleep [1, 3].")

    assert answer.text == "Cats purr [1]. Dogs bark [2][1]. Both sleep [2][1]."
    assert [c.chunk_id for c in answer.citations] == ["p3", "p1"]
    assert answer.citations[0].text == THREE[2].text
    assert answer.citations[0].score == THREE[2].score
    assert (answer.prompt_tokens, answer.completion_tokens) == (7, 3)


def test_markers_naming_no_passage_are_dropped() -> None:
    answer = parse("Built in 1889 [7]. In Paris [0][2].")

    assert answer.text == "Built in 1889. In Paris [1]."
    assert [c.chunk_id for c in answer.citations] == ["p2"]


def test_an_answer_citing_nothing_cites_every_passage_it_was_shown() -> None:
    answer = parse("  It was built in 1889.  ")

    assert answer.answerable
    assert answer.text == "It was built in 1889."
    assert answer.citations == [parse("[1][2][3]").citations[i] for i in range(3)]


@pytest.mark.parametrize("reply", [SENTINEL, f"  {SENTINEL}\n", f"{SENTINEL}.", "", "   ", "NO_"])
def test_the_sentinel_or_nothing_abstains(reply: str) -> None:
    answer = parse(reply)

    assert answer == Answer(
        text=ABSTAIN_TEXT,
        answerable=False,
        citations=[],
        prompt_tokens=7,
        completion_tokens=3,
        abstain_reason="model_declined",
    )


def test_only_markers_naming_no_passage_abstains() -> None:
    assert not parse("[9]").answerable


@pytest.mark.parametrize(
    "pieces",
    [
        ["Built", " in 1889", " [", "3", "]", ".", " In Paris", " [1", ",", " 9]", "."],
        ["Built in 1889 [3].", " In Paris [1, 9]."],
        list("Built in 1889 [3]. In Paris [1, 9]."),
    ],
)
def test_a_streamed_reply_reads_as_the_whole_one(pieces: list[str]) -> None:
    parser = AnswerParser(THREE)
    shown = [parser.feed(piece) for piece in pieces]
    rest, answer = parser.finish(prompt_tokens=7, completion_tokens=3)

    assert "".join([*shown, rest]) == answer.text == "Built in 1889 [1]. In Paris [2]."
    assert answer == parse("".join(pieces))


def test_a_streamed_sentinel_shows_only_the_abstention() -> None:
    parser = AnswerParser(THREE)
    shown = [parser.feed(piece) for piece in [" NO", "_ANS", "WER", " because"]]
    rest, answer = parser.finish(prompt_tokens=7, completion_tokens=3)

    assert shown == ["", "", "", ""]
    assert rest == answer.text == ABSTAIN_TEXT
    assert not answer.answerable


def test_a_reply_starting_like_the_sentinel_is_shown_once_it_differs() -> None:
    parser = AnswerParser(THREE)

    assert parser.feed("N") == ""
    assert parser.feed("o, it was 1889 [2") == "No, it was 1889"
    assert parser.feed("]. ") == " [1]."
    rest, answer = parser.finish(prompt_tokens=0, completion_tokens=0)
    assert rest == ""
    assert answer.text == "No, it was 1889 [1]."
