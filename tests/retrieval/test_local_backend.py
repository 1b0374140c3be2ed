"""The local backend on the real bundled SmolLM2-135M-Instruct (GGUF, dequantised on the CPU).

Loading takes ~30 s on 2 cores, so the model is loaded once for the module; each answer then
takes ~2 s.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path

import pytest

from retrieval.errors import GenerationUnavailableError
from retrieval.generation.base import Answer, Delta, GenerationOptions, Passage
from retrieval.generation.extractive import ABSTAIN_TEXT, DEFAULT_MIN_SCORE, abstain
from retrieval.generation.local import LocalBackend
from tests.conftest import SMOLLM2_GGUF
from tests.llm import markers
from tests.retrieval.conftest import BANANA, EIFFEL, NO_VECTOR, QUESTION


@pytest.fixture(scope="module")
def smollm2(smollm2_dir: Path) -> LocalBackend:
    backend = LocalBackend(smollm2_dir, gguf_file=SMOLLM2_GGUF, max_new_tokens=48)
    backend.warm_up()
    return backend


@pytest.mark.slow
def test_a_clear_context_is_answered_from_the_passages_shown(smollm2: LocalBackend) -> None:
    answer = smollm2.generate(QUESTION, NO_VECTOR, [BANANA, EIFFEL])

    assert answer.answerable
    assert "1889" in answer.text
    # SmolLM2 writes no marker here, so the answer cites all it was shown, and says so by
    # carrying no marker.
    assert markers(answer.text) == set()
    assert [c.chunk_id for c in answer.citations] == ["banana", "eiffel"]
    assert answer.prompt_tokens > 0
    assert answer.completion_tokens > 0


@pytest.mark.slow
def test_the_passage_the_model_names_is_the_one_cited(smollm2: LocalBackend) -> None:
    # SmolLM2 writes "The answer is: [2]", the right passage (it favours the last one shown:
    # with the two swapped it names [2] all the same, the wrong one, and this test fails).
    answer = smollm2.generate("What colour are bananas?", NO_VECTOR, [EIFFEL, BANANA])

    assert markers(answer.text) == {1}
    assert [c.chunk_id for c in answer.citations] == ["banana"]


@pytest.mark.slow
def test_stream_yields_deltas_then_one_answer_of_the_deltas_joined(
    smollm2: LocalBackend,
) -> None:
    *deltas, answer = smollm2.stream(QUESTION, NO_VECTOR, [EIFFEL, BANANA])

    assert len(deltas) >= 2
    assert all(isinstance(d, Delta) for d in deltas)
    assert isinstance(answer, Answer)
    assert answer.text == "".join(d.text for d in deltas if isinstance(d, Delta))
    assert "1889" in answer.text
    # No marker: every passage shown is cited; markers: [1]..[k] for the k cited.
    cited = [c.chunk_id for c in answer.citations]
    if markers(answer.text):
        assert markers(answer.text) == set(range(1, len(cited) + 1))
        assert set(cited) <= {"eiffel", "banana"}
    else:
        assert cited == ["eiffel", "banana"]
    assert answer.completion_tokens > 0


@pytest.mark.slow
def test_a_stream_stopped_early_frees_the_model(smollm2: LocalBackend) -> None:
    events = smollm2.stream(QUESTION, NO_VECTOR, [EIFFEL])
    assert isinstance(events, Generator)  # what a caller closes when its client goes away
    assert isinstance(next(events), Delta)
    events.close()  # stops the generation thread, which releases the model's lock

    assert smollm2.generate(QUESTION, NO_VECTOR, [EIFFEL]).answerable


@pytest.mark.slow
def test_a_requests_max_tokens_lowers_the_answers_length_never_raises_it(
    smollm2: LocalBackend,
) -> None:
    short = smollm2.generate(QUESTION, NO_VECTOR, [EIFFEL], options=GenerationOptions(3))
    *_, streamed = smollm2.stream(QUESTION, NO_VECTOR, [EIFFEL], options=GenerationOptions(3))
    raised = smollm2.generate(QUESTION, NO_VECTOR, [BANANA, EIFFEL], options=GenerationOptions(999))

    assert 0 < short.completion_tokens <= 3
    assert isinstance(streamed, Answer)
    assert 0 < streamed.completion_tokens <= 3
    assert raised.completion_tokens <= 48  # the backend's own max_new_tokens


@pytest.mark.slow
def test_a_positive_temperature_samples_and_zero_stays_greedy(smollm2: LocalBackend) -> None:
    def answers(temperature: float) -> set[str]:
        options = GenerationOptions(max_tokens=12, temperature=temperature)
        return {
            smollm2.generate("Tell me about Paris.", NO_VECTOR, [EIFFEL], options=options).text
            for _ in range(3)
        }

    # Three samples of 12 tokens at 1.5 all alike would be a near-impossible coincidence.
    assert len(answers(1.5)) > 1
    assert len(answers(0)) == 1


def test_weak_evidence_abstains_without_loading_the_model(tmp_path: Path) -> None:
    # An empty directory: loading would raise GenerationUnavailableError.
    backend = LocalBackend(tmp_path)
    weak = [Passage("a", "d", "Anything.", DEFAULT_MIN_SCORE - 0.01)]

    answer = backend.generate(QUESTION, NO_VECTOR, weak)

    assert answer == abstain("below_min_score")
    assert list(backend.stream(QUESTION, NO_VECTOR, weak)) == [Delta(ABSTAIN_TEXT), answer]


@pytest.mark.slow  # imports transformers (~6 s)
def test_a_missing_model_is_unavailable(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "nowhere")

    with pytest.raises(GenerationUnavailableError, match="cannot load"):
        backend.generate(QUESTION, NO_VECTOR, [EIFFEL])
    with pytest.raises(GenerationUnavailableError, match="cannot load"):
        list(backend.stream(QUESTION, NO_VECTOR, [EIFFEL]))


def test_name_is_the_gguf_file_or_the_directory(tmp_path: Path) -> None:
    assert LocalBackend(tmp_path, gguf_file="m.gguf").name == "local:m.gguf"
    assert LocalBackend(tmp_path / "SmolLM2").name == "local:SmolLM2"
