"""The evidence gate's signals and decision, and how a model's own refusal is read."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pytest

from retrieval.generation.base import Passage
from retrieval.generation.evidence import (
    DEFAULT_GATE,
    Evidence,
    EvidenceGate,
    GateModel,
    content_terms,
    coverage,
    measure,
)
from retrieval.generation.prompt import declines, parse_answer


class AxisEmbedder:
    """Sentences that name "otter" point along x, everything else along y."""

    model_id = "axis"
    dimension = 2

    def __init__(self) -> None:
        self.calls = 0

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.calls += 1
        return np.array(
            [[1.0, 0.0] if "otter" in t.lower() else [0.0, 1.0] for t in texts], dtype=np.float32
        )


def passage(text: str, score: float) -> Passage:
    return Passage(chunk_id=text[:8], document_id="d", text=text, score=score)


def test_content_terms_drop_stop_words_and_meet_at_a_shared_stem() -> None:
    assert content_terms("Does the protein inhibit the kinases?") == {"protei", "inhibi", "kinase"}
    assert coverage(content_terms("inhibition of kinases"), "It inhibits each kinase.") == 1.0
    assert coverage(content_terms("otters and beavers"), "Otters float.") == 0.5
    assert coverage(set(), "anything") == 1.0


def test_measure_takes_the_best_sentence_coverage_and_margin() -> None:
    passages = [passage("Otters hold hands.", 0.7), passage("Beavers build dams.", 0.3)]
    evidence = measure("Why do otters hold hands?", passages, [0.9, 0.1])
    assert (evidence.passage, evidence.sentence, evidence.coverage) == (0.7, 0.9, 1.0)
    assert evidence.margin == pytest.approx(0.4)


def test_the_model_is_a_logistic_over_the_signals() -> None:
    model = GateModel(weights=(1.0, 0.0, 0.0, 0.0), bias=0.0, threshold=0.5)
    assert model.probability(Evidence(0.0, 0, 0, 0)) == 0.5
    assert model.answers(Evidence(0.1, 0, 0, 0))
    assert not model.answers(Evidence(-0.1, 0, 0, 0))


def test_no_passages_abstain_without_embedding() -> None:
    embedder = AxisEmbedder()
    verdict = EvidenceGate(embedder).judge("q?", [1.0, 0.0], [])
    assert (verdict.answerable, verdict.reason, embedder.calls) == (False, "no_passages", 0)


def test_min_score_replaces_the_model() -> None:
    gate = EvidenceGate(AxisEmbedder())
    weak = [passage("Otters hold hands.", 0.4)]
    assert gate.judge("otters?", [1.0, 0.0], weak, min_score=0.3).answerable
    verdict = gate.judge("otters?", [1.0, 0.0], weak, min_score=0.5)
    assert (verdict.answerable, verdict.reason) == (False, "below_min_score")


def test_the_gate_answers_strong_evidence_and_abstains_on_weak() -> None:
    gate = EvidenceGate(AxisEmbedder())
    strong = [passage("Sea otters hold hands when they sleep.", 0.75)]
    weak = [passage("Beavers build dams from branches.", 0.45)]
    assert gate.judge("Why do sea otters hold hands?", [1.0, 0.0], strong).answerable
    verdict = gate.judge("Why do sea otters hold hands?", [1.0, 0.0], weak)
    assert (verdict.answerable, verdict.reason) == (False, "weak_evidence")
    assert verdict.probability is not None
    assert verdict.probability < DEFAULT_GATE.threshold
    # The bar is the namespace's to move: 0 never abstains on weak evidence.
    assert gate.judge("Why do sea otters hold hands?", [1.0, 0.0], weak, threshold=0.0).answerable


@pytest.mark.parametrize(
    "reply",
    [
        "The passages do not mention what otters eat.",
        "The provided context doesn't contain this information.",
        "I cannot answer this from the passages.",
        "There is no information about bread in the passages.",
    ],
)
def test_a_model_saying_the_passages_lack_the_answer_is_an_abstention(reply: str) -> None:
    assert declines(reply)
    answer = parse_answer(reply, [passage("Otters.", 0.9)], prompt_tokens=10, completion_tokens=5)
    assert (answer.answerable, answer.abstain_reason, answer.citations) == (
        False,
        "model_declined",
        [],
    )
    assert answer.text == reply  # the model's words stand; the flag says what they mean


def test_a_cited_reply_is_an_answer_even_if_it_says_not() -> None:
    reply = "Otters do not eat bread [1]."
    answer = parse_answer(reply, [passage("Otters.", 0.9)], prompt_tokens=1, completion_tokens=1)
    assert answer.answerable
    assert not declines("Otters hold hands [1].")


def test_a_passage_about_something_else_abstains_whatever_words_it_shares() -> None:
    # The model alone extrapolates: a sentence sharing the question's words outweighs a
    # passage that is about something else. The floor on the best passage stops it.
    lexical_coincidence = Evidence(passage=0.15, sentence=0.41, coverage=1.0, margin=0.02)
    assert DEFAULT_GATE.probability(lexical_coincidence) >= DEFAULT_GATE.threshold
    assert not DEFAULT_GATE.answers(lexical_coincidence)
    assert DEFAULT_GATE.answers(
        Evidence(passage=DEFAULT_GATE.passage_floor, sentence=0.6, coverage=0.8, margin=0.1)
    )
