"""Whether the retrieved passages hold an answer: the evidence gate every answer passes first.

One cosine cannot tell "the documents say" from "the documents are about the same topic": on
SciFact the best passage's cosine has median 0.64 with the answer present and 0.49 without, and
the two overlap widely. The gate combines a few signals that are cheap at query time and do not
depend on the embedding model's scale more than a re-fit can absorb (``bench/calibrate.py``):

- ``passage``: the best passage's cosine with the question;
- ``sentence``: the best single sentence's cosine, among the quotable sentences of the best
  passages (a passage on the topic scores well as a whole; the sentence that states the answer
  scores better still);
- ``coverage``: the share of the question's content words that the best-covering passage
  contains (the words a claim is about, not the topic's vocabulary);
- ``margin``: how far the best passage stands out from the other retrieved ones.

A logistic model over them gives the probability that the answer is present; the gate answers
at or above ``threshold``. Weights and threshold were fitted offline on one half of SciFact's
claims (even query ids) and are reported on the other half (odd ids): see ``bench/RESULTS.md``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Self

import numpy as np

from retrieval.cache import scoped
from retrieval.embedding import Embedder
from retrieval.generation.base import AbstainReason, Passage
from retrieval.generation.extractive import quotable_sentences

# Words that say nothing about what a question asks; the coverage feature ignores them.
_STOP_WORDS_TEXT = """
a about above after again against all am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from further
had has have having he her here hers herself him himself his how i if in into is it its
itself just me more most my myself no nor not now of off on once only or other our ours out
over own same she should so some such than that the their theirs them themselves then there
these they this those through to too under until up very was we were what when where which
while who whom why will with would you your yours yourself yourselves also may might must
shall whether within without among upon via per versus vs whose
"""
_STOP_WORDS = frozenset(_STOP_WORDS_TEXT.split())
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
# Words are compared by their first letters, a stemmer in one line: "inhibits", "inhibited"
# and "inhibition" meet at "inhibi". Six letters keep "protein" and "proteasome" apart.
_STEM = 6


def content_terms(text: str) -> set[str]:
    """The stems of ``text``'s content words: lowercased, stop words and one-letter words out."""
    return {
        word[:_STEM]
        for word in (w.lower() for w in _WORD.findall(text))
        if word not in _STOP_WORDS and (len(word) > 1 or word.isdigit())
    }


def coverage(question_terms: set[str], text: str) -> float:
    """The share of ``question_terms`` found in ``text`` (1.0 when the question has none)."""
    if not question_terms:
        return 1.0
    return len(question_terms & content_terms(text)) / len(question_terms)


@dataclass(frozen=True)
class Evidence:
    """The signals the gate weighs; see the module's docstring."""

    passage: float
    sentence: float
    coverage: float
    margin: float

    def as_vector(self) -> tuple[float, ...]:
        return (self.passage, self.sentence, self.coverage, self.margin)


def measure(
    question: str, passages: Sequence[Passage], sentence_cosines: Sequence[float]
) -> Evidence:
    """The :class:`Evidence` for ``question`` given its passages (best first, ``score`` being
    the cosine) and the cosines of the candidate sentences an answer would quote.

    ``passages`` must not be empty.
    """
    cosines = [p.score for p in passages]
    best = max(cosines)
    rest = [c for c in cosines if c != best] or [best]
    terms = content_terms(question)
    return Evidence(
        passage=best,
        sentence=max(sentence_cosines, default=best),
        coverage=max(coverage(terms, p.text) for p in passages[:_COVERAGE_PASSAGES]),
        margin=best - sum(rest) / len(rest),
    )


# Coverage looks at the passages an answer would draw on, not the whole list.
_COVERAGE_PASSAGES = 3


@dataclass(frozen=True)
class GateModel:
    """A logistic model over :class:`Evidence`.

    ``P(answer present) = 1 / (1 + exp(-(bias + w . x)))``, where ``x`` is
    :meth:`Evidence.as_vector`; the gate answers when it reaches ``threshold``.
    """

    weights: tuple[float, float, float, float]
    bias: float
    threshold: float
    # Below this best-passage cosine the passages are about something else, whatever words or
    # one sentence they happen to share with the question ("What is the capital of
    # Australia?" against an abstract on "human capital" in Australian hospitals: coverage 1.0,
    # a sentence at 0.41, the passage at 0.15). The model alone cannot say so: it was fitted
    # where such passages never occur, and extrapolates. Fitted as the lowest best-passage
    # cosine of an answerable claim in the fitting half, less 0.05.
    passage_floor: float = -1.0

    def probability(self, evidence: Evidence) -> float:
        z = self.bias + sum(w * x for w, x in zip(self.weights, evidence.as_vector(), strict=True))
        return 1.0 / (1.0 + math.exp(-z))

    def answers(self, evidence: Evidence) -> bool:
        return (
            evidence.passage >= self.passage_floor and self.probability(evidence) >= self.threshold
        )


@dataclass(frozen=True)
class Verdict:
    """The gate's decision: answer, or abstain and why (with what it measured)."""

    answerable: bool
    reason: AbstainReason | None = None
    evidence: Evidence | None = None
    probability: float | None = None


class EvidenceGate:
    """Decides, before any answer is generated, whether ``passages`` hold the answer.

    Embeds the quotable sentences of the best passages with ``embedder`` (the extractive answer
    quotes from the same sentences, so behind the embedding cache they are embedded once).
    """

    def __init__(self, embedder: Embedder, model: GateModel | None = None) -> None:
        self._embedder = embedder
        self._model = model or DEFAULT_GATE

    def scoped(self, scope: str) -> Self:
        """This gate judging for ``scope`` (a tenant id): its sentence vectors are cached in
        that tenant's entries (:func:`retrieval.cache.scoped`)."""
        return type(self)(scoped(self._embedder, scope), self._model)

    def judge(
        self,
        question: str,
        question_vector: Sequence[float],
        passages: Sequence[Passage],
        *,
        min_score: float | None = None,
        threshold: float | None = None,
    ) -> Verdict:
        """Answer or abstain; see the module's docstring.

        ``min_score`` replaces the model with the one-cosine rule of earlier versions (answer
        when the best passage's cosine reaches it); ``threshold`` moves the model's bar (0
        never abstains on weak evidence, 1 always does).

        Raises:
            Whatever ``embedder.encode`` raises.
        """
        if not passages:
            return Verdict(False, "no_passages")
        best = max(p.score for p in passages)
        if min_score is not None:
            return Verdict(best >= min_score, None if best >= min_score else "below_min_score")
        evidence = self.measure(question, question_vector, passages)
        probability = self._model.probability(evidence)
        bar = self._model.threshold if threshold is None else threshold
        # A bar of 0 turns the gate off altogether, the floor too: "never abstain on weak
        # evidence" is what a namespace that sets it asks for.
        answerable = probability >= bar and (
            bar == 0 or evidence.passage >= self._model.passage_floor
        )
        return Verdict(answerable, None if answerable else "weak_evidence", evidence, probability)

    def measure(
        self, question: str, question_vector: Sequence[float], passages: Sequence[Passage]
    ) -> Evidence:
        """The :class:`Evidence` the gate weighs (``bench/calibrate.py`` fits on it).

        ``passages`` must not be empty.
        """
        candidates = quotable_sentences(passages[:_COVERAGE_PASSAGES])
        sentence_cosines: list[float] = []
        if candidates:
            vectors = self._embedder.encode([text for _, text in candidates])
            question_unit = np.asarray(question_vector, dtype=np.float64)
            norm = float(np.linalg.norm(question_unit)) or 1.0
            sentence_cosines = (vectors.astype(np.float64) @ (question_unit / norm)).tolist()
        return measure(question, passages, sentence_cosines)


# Fitted by `python -m bench.calibrate` for all-MiniLM-L6-v2 on SciFact (bench/calibration.csv:
# the signals of 300 claims, each asked of a namespace holding its evidence among 900 other
# abstracts and of one holding only those 900). Fitted on the even query ids; threshold: the best
# balanced accuracy that still answers 97 % of the fitting half's answerable claims. On the odd
# ids, never used to choose: answered 0.941 with the evidence present, abstained 0.255 without
# (the single best-passage cosine at the same answer rate abstains 0.111; at the old default
# 0.50 it answers only 0.791). The curve is in bench/RESULTS.md. The weight on `passage` is
# negative because `sentence` carries the same signal better: the best passage counts for
# little once its best sentence has been scored; hence also the floor on it (GateModel).
DEFAULT_GATE = GateModel(
    weights=(-1.9512, 7.3133, 3.3575, 9.5403), bias=-6.1844, threshold=0.1639, passage_floor=0.238
)
