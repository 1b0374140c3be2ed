"""The extractive backend: sentence splitting, quoting with citations, and abstaining."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pytest

from retrieval.embedding import Embedder
from retrieval.generation.base import Answer, Passage
from retrieval.generation.extractive import (
    ABSTAIN_TEXT,
    DEFAULT_MIN_SCORE,
    ExtractiveGenerator,
    abstain,
    quote,
    render_quotes,
    split_sentences,
)
from tests.retrieval.conftest import MiniLM

# "quoted sentence" [n]
MARKED_QUOTE = re.compile(r'"([^"]+)" \[(\d+)\]')


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("One here. Two there! Three? Four", ["One here.", "Two there!", "Three?", "Four"]),
        ("Dr. Smith gave 3.5 mg daily. It helped.", ["Dr. Smith gave 3.5 mg daily.", "It helped."]),
        (
            "Use a whisk, e.g. A steel one. Then stir.",
            ["Use a whisk, e.g. A steel one.", "Then stir."],
        ),
        ("That is, i.e. The same. Fine.", ["That is, i.e. The same.", "Fine."]),
        (
            "Smith et al. (2005) agree. See Fig. 2 too.",
            ["Smith et al. (2005) agree.", "See Fig. 2 too."],
        ),
        (
            "J. R. R. Tolkien wrote it. The U.S. Navy too.",
            ["J. R. R. Tolkien wrote it.", "The U.S. Navy too."],
        ),
        (
            "Prices rose approx. three times. Then fell.",
            ["Prices rose approx. three times.", "Then fell."],
        ),
        ('He said "stop." Then left.', ['He said "stop."', "Then left."]),
        ("(In brackets.) After.", ["(In brackets.)", "After."]),
        ("It cost $3.50. Next year 4.25.", ["It cost $3.50.", "Next year 4.25."]),
        ("Wait... What?! Yes.", ["Wait...", "What?!", "Yes."]),
        ("A line\nwrapped here. Next.", ["A line wrapped here.", "Next."]),
        ("RESULTS\n\nNo full stop above", ["RESULTS", "No full stop above"]),
        ("Version 2.0.1 shipped. Good.", ["Version 2.0.1 shipped.", "Good."]),
        ("", []),
        ("  \n\n ", []),
    ],
)
def test_split_sentences(text: str, sentences: list[str]) -> None:
    assert split_sentences(text) == sentences


def test_render_quotes_numbers_each_quote_from_one() -> None:
    assert render_quotes(["Sentence one.", "Sentence two."]) == (
        '"Sentence one." [1] "Sentence two." [2]'
    )


def test_abstaining_says_so_and_cites_nothing() -> None:
    answer = abstain("weak_evidence")
    assert answer == Answer(
        text=ABSTAIN_TEXT, answerable=False, citations=[], abstain_reason="weak_evidence"
    )
    assert ABSTAIN_TEXT == (
        "The documents in this namespace do not contain an answer to this question."
    )


def test_quote_cites_each_sentence_with_its_passage() -> None:
    first = Passage(chunk_id="c1", document_id="d1", text="A. B.", score=0.8)
    second = Passage(chunk_id="c2", document_id="d2", text="C.", score=0.6)

    answer = quote([(first, "A b c."), (second, "C d e.")])

    assert answer.text == '"A b c." [1] "C d e." [2]'
    assert [(c.document_id, c.chunk_id, c.text, c.score) for c in answer.citations] == [
        ("d1", "c1", "A b c.", 0.8),
        ("d2", "c2", "C d e.", 0.6),
    ]
    assert (answer.answerable, answer.prompt_tokens, answer.completion_tokens) == (True, 0, 0)


class TableEmbedder:
    """Vectors looked up from a table: sentence i gets cosine table[i] with the x axis."""

    def __init__(self, cosines: dict[str, float]) -> None:
        self.cosines = cosines
        self.calls = 0

    @property
    def model_id(self) -> str:
        return "table"

    @property
    def dimension(self) -> int:
        return 2

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.calls += 1
        cos = [self.cosines[t] for t in texts]
        return np.asarray([[c, math.sqrt(1 - c * c)] for c in cos], dtype=np.float32)


X_AXIS = [1.0, 0.0]


def test_no_passages_abstain_without_embedding_anything() -> None:
    embedder = TableEmbedder({})
    answer = ExtractiveGenerator(embedder, min_score=0.4).generate("q?", X_AXIS, [])
    assert answer == abstain("no_passages")
    assert embedder.calls == 0


def test_a_best_passage_below_min_score_abstains_without_embedding_anything() -> None:
    embedder = TableEmbedder({})
    weak = Passage(chunk_id="c", document_id="d", text="Some text here.", score=0.39)
    answer = ExtractiveGenerator(embedder, min_score=0.4).generate("q?", X_AXIS, [weak])
    assert answer == abstain("below_min_score")
    assert embedder.calls == 0


def test_best_sentences_are_kept_in_passage_then_text_order() -> None:
    # Blended scores (0.7 cosine + 0.3 passage): beta 0.90, gamma 0.905, alpha 0.34, delta 0.45.
    embedder = TableEmbedder(
        {"Alpha one two.": 0.1, "Beta one two.": 0.9, "Gamma one two.": 0.95, "Delta one.": 0.3}
    )
    weaker = Passage(chunk_id="c2", document_id="d2", text="Gamma one two. Delta one.", score=0.8)
    better = Passage(
        chunk_id="c1", document_id="d1", text="Alpha one two. Beta one two.", score=0.9
    )

    answer = ExtractiveGenerator(embedder, max_sentences=2, min_score=0.4).generate(
        "q?", X_AXIS, [better, weaker]
    )

    assert answer.text == '"Beta one two." [1] "Gamma one two." [2]'
    assert [c.chunk_id for c in answer.citations] == ["c1", "c2"]
    assert embedder.calls == 1


def test_passages_below_min_score_supply_no_quotes() -> None:
    embedder = TableEmbedder({"Strong passage text.": 0.5, "Perfect but weak.": 1.0})
    strong = Passage(chunk_id="s", document_id="d", text="Strong passage text.", score=0.6)
    weak = Passage(chunk_id="w", document_id="d", text="Perfect but weak.", score=0.2)

    answer = ExtractiveGenerator(embedder, min_score=0.4).generate("q?", X_AXIS, [strong, weak])

    assert [c.chunk_id for c in answer.citations] == ["s"]


def test_beside_the_best_passage_an_off_topic_one_supplies_no_quote() -> None:
    embedder = TableEmbedder({"Otters hold hands.": 0.8, "Etna erupts often.": 0.05})
    otters = Passage(chunk_id="o", document_id="d1", text="Otters hold hands.", score=0.75)
    etna = Passage(chunk_id="e", document_id="d2", text="Etna erupts often.", score=0.003)
    floored = ExtractiveGenerator(embedder, max_sentences=3, min_score=None, quote_floor=0.24)
    unfloored = ExtractiveGenerator(embedder, max_sentences=3, min_score=None)

    assert [c.chunk_id for c in floored.generate("q?", X_AXIS, [otters, etna]).citations] == ["o"]
    assert [c.chunk_id for c in unfloored.generate("q?", X_AXIS, [otters, etna]).citations] == [
        "o",
        "e",
    ]
    # The best passage always may: whether to answer at all is the gate's decision.
    weak_best = floored.generate("q?", X_AXIS, [etna])
    assert [c.chunk_id for c in weak_best.citations] == ["e"]


def test_max_sentences_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ExtractiveGenerator(TableEmbedder({}), max_sentences=0)


# The real model from here on.

EIFFEL = (
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris. It was "
    "designed by the engineering company of Gustave Eiffel and built from 1887 to 1889. The "
    "tower is 330 metres tall, about the same height as an 81-storey building. It was the "
    "tallest man-made structure in the world for 41 years."
)
PHOTOSYNTHESIS = (
    "Photosynthesis is the process by which green plants turn light energy into chemical "
    "energy. Chlorophyll absorbs mostly blue and red light, e.g. at 430 nm and 662 nm. The "
    "oxygen that plants release comes from splitting water molecules."
)
LOUVRE = (
    "The Louvre in Paris is the most-visited art museum in the world. It houses the Mona Lisa, "
    "which Leonardo da Vinci painted in the early 16th century. Dr. Martin reported 8.7 million "
    "visitors in 2023."
)
HEIGHT = "The tower is 330 metres tall, about the same height as an 81-storey building."
PAINTER = "It houses the Mona Lisa, which Leonardo da Vinci painted in the early 16th century."


class CountingEmbedder:
    """Wraps a real embedder, counting encode calls."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.calls = 0

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.calls += 1
        return self.inner.encode(texts)


def retrieve(
    embedder: Embedder, question: str, texts: dict[str, str]
) -> tuple[list[float], list[Passage]]:
    """What search would hand the generator: passages scored by real cosine, best first."""
    question_vector = embedder.encode([question])[0]
    scores = embedder.encode(list(texts.values())) @ question_vector
    passages = [
        Passage(chunk_id=f"chunk-{name}", document_id=f"doc-{name}", text=text, score=float(s))
        for (name, text), s in zip(texts.items(), scores, strict=True)
    ]
    passages.sort(key=lambda p: p.score, reverse=True)
    return [float(x) for x in question_vector], passages


CORPUS = {"eiffel": EIFFEL, "photosynthesis": PHOTOSYNTHESIS, "louvre": LOUVRE}


def assert_markers_index_citations(answer: Answer) -> None:
    marked = MARKED_QUOTE.findall(answer.text)
    assert " ".join(f'"{q}" [{n}]' for q, n in marked) == answer.text  # nothing but quotes
    assert [int(n) for _, n in marked] == list(range(1, len(answer.citations) + 1))
    for quoted, n in marked:
        citation = answer.citations[int(n) - 1]
        assert citation.text == quoted
        assert quoted in CORPUS[citation.chunk_id.removeprefix("chunk-")]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("question", "sentence", "chunk_id"),
    [
        ("How tall is the Eiffel Tower?", HEIGHT, "chunk-eiffel"),
        ("Who painted the Mona Lisa?", PAINTER, "chunk-louvre"),
    ],
)
def test_the_answer_quotes_the_answering_sentence_and_cites_its_chunk(
    minilm: MiniLM, question: str, sentence: str, chunk_id: str
) -> None:
    embedder = CountingEmbedder(minilm)
    question_vector, passages = retrieve(minilm, question, CORPUS)

    answer = ExtractiveGenerator(embedder).generate(question, question_vector, passages)

    assert answer.answerable
    [cited] = [c for c in answer.citations if c.text == sentence]
    assert (cited.chunk_id, cited.document_id) == (chunk_id, chunk_id.replace("chunk", "doc"))
    assert cited.score == pytest.approx(max(p.score for p in passages))
    assert f'"{sentence}" [{answer.citations.index(cited) + 1}]' in answer.text
    assert_markers_index_citations(answer)
    assert embedder.calls == 1  # every candidate sentence in one batch


@pytest.mark.slow
def test_one_sentence_answers_quote_only_the_best(minilm: MiniLM) -> None:
    question = "How tall is the Eiffel Tower?"
    question_vector, passages = retrieve(minilm, question, CORPUS)

    answer = ExtractiveGenerator(minilm, max_sentences=1).generate(
        question, question_vector, passages
    )

    assert answer.text == f'"{HEIGHT}" [1]'
    assert [c.chunk_id for c in answer.citations] == ["chunk-eiffel"]


@pytest.mark.slow
def test_a_sentence_repeated_by_overlapping_chunks_is_quoted_once(minilm: MiniLM) -> None:
    question = "How tall is the Eiffel Tower?"
    overlapping = {"eiffel": EIFFEL, "eiffel-tail": HEIGHT + " It has three levels for visitors."}
    question_vector, passages = retrieve(minilm, question, overlapping)

    answer = ExtractiveGenerator(minilm).generate(question, question_vector, passages)

    quoted = [c.text for c in answer.citations]
    assert quoted.count(HEIGHT) == 1
    assert len(set(quoted)) == len(quoted)


@pytest.mark.slow
@pytest.mark.parametrize(
    "question",
    [
        "How do I bake sourdough bread?",
        "Which team won the 2014 World Cup?",
        "How do I reset my router?",
    ],
)
def test_weak_evidence_abstains(minilm: MiniLM, question: str) -> None:
    question_vector, passages = retrieve(minilm, question, CORPUS)
    assert max(p.score for p in passages) < DEFAULT_MIN_SCORE  # the premise: nothing relevant

    answer = ExtractiveGenerator(minilm).generate(question, question_vector, passages)

    assert answer == abstain("below_min_score")


def test_markdown_headings_are_never_sentences() -> None:
    text = "# Mount Etna\n\nEtna is active.\n## History\nIt erupted often.\n#hashtag stays."
    assert split_sentences(text) == ["Etna is active.", "It erupted often.", "#hashtag stays."]
