"""An answer made only of quoted sentences from the retrieved passages: no LLM, nothing invented.

The generator abstains unless the best passage clears ``min_score``; otherwise it quotes the
sentences closest to the question, each followed by a ``[n]`` marker naming its citation.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Self

import numpy as np
import numpy.typing as npt

from retrieval.cache import scoped
from retrieval.embedding import Embedder
from retrieval.generation.base import (
    DEFAULT_OPTIONS,
    AbstainReason,
    Answer,
    Citation,
    Delta,
    GenerationOptions,
    Passage,
    StreamEvent,
)

ABSTAIN_TEXT = "The documents in this namespace do not contain an answer to this question."

# Cosine of the best passage below which we abstain, for all-MiniLM-L6-v2. Measured on SciFact
# (/work/shared/data/scifact): 300 abstracts (the relevant ones of 150 random test claims plus
# random others) cut into 596 chunks of <= 250 word pieces; top-1 chunk cosine per query:
#   150 SciFact claims:  min 0.292, p5 0.409, p10 0.442, median 0.623
#     (132 whose top-1 chunk is a relevant doc: min 0.292, p5 0.434, median 0.641)
#   16 natural questions written about sampled abstracts: min 0.557, median 0.634
#   40 off-topic questions (cooking, sport, travel, coding, HR): median 0.184, p95 0.284,
#     max 0.346 ("What is the capital of Australia?" against an abstract about Australian farms)
# At 0.40: 95.3 % of claims answered (97.0 % of those with a relevant top-1), 16/16 natural
# questions, 40/40 off-topic abstained. (A throwaway script; encoding took 40 s on 2 cores.)
#
# Off-topic questions are the easy case. bench/abstention.py asks 100 claims of a namespace that
# holds their abstracts and of one that holds only 900 other, mostly related, SciFact abstracts
# (hybrid search): there the best passage's cosine has median 0.636 with the answer present and
# 0.493 without. Answered / abstained (balanced accuracy) by threshold:
#   0.40: 0.97 / 0.12 (0.545)   0.45: 0.91 / 0.32 (0.615)   0.50: 0.85 / 0.53 (0.690)
#   0.55: 0.76 / 0.70 (0.730)   0.575: 0.70 / 0.81 (0.755)  0.60: 0.62 / 0.85 (0.735)
# 0.50 is the default: it keeps every natural question above and every off-topic one below with
# a margin, and answers 85 % of answerable claims while abstaining on half of the related but
# unanswerable ones. Higher values abstain more on near misses and lose real answers; a
# deployment whose corpus is all one topic may want 0.55 (SHOAL_RETRIEVAL__MIN_SCORE).
DEFAULT_MIN_SCORE = 0.50

# A sentence's score: (1 - w) * its cosine with the question + w * its passage's score. A
# sentence alone loses its context (a pronoun subject, an acronym defined earlier) and its
# cosine underrates it; the passage score carries that context. Within one passage the passage
# term is the same for every sentence, so it only arbitrates between passages: a sentence from
# a clearly better passage beats a marginally closer one from a weak passage. 0.3 keeps the
# sentence's own relevance dominant.
PASSAGE_WEIGHT = 0.3

# Passages whose sentences compete for the quote: the best three by cosine. Every candidate
# sentence is embedded per answer (about 5 ms each on two CPU cores; a SciFact chunk holds 8-10),
# so five passages cost ~250 ms, most of a query's time (bench/RESULTS.md). With the passage
# term of the score favouring the best passages, a fourth or fifth rarely supplies a quote.
MAX_QUOTED_PASSAGES = 3

# Fragments shorter than this (headings, "Table 1.") are never quoted as an answer.
_MIN_WORDS = 3

# No sentence-splitting library is installed (nltk, spaCy, pysbd, syntok: none; punkt and
# spaCy's models would also need data downloaded), so this is a small rule-based splitter.
# A boundary is ".", "!" or "?" (or a run of them, then any closing quotes or brackets)
# followed by whitespace, so a decimal point ("3.5") or a dot inside a token ("U.S.A") never
# is. A "." is no boundary after a known abbreviation, a dotted one ("e.g.", "i.e.", "U.S."),
# or a one-letter initial ("J. Smith"); and nothing is a boundary before a lowercase letter
# ("approx. three", "etc. and"). Blank lines always end a sentence (headings, list items);
# single newlines are line wraps. Known misses, accepted: a sentence that starts lowercase
# ("p53 binds ...") or ends on an abbreviation or initial ("... vitamin A. Then") is not split
# off, which costs a longer quote, never a wrong one.
# Markdown ATX headings are structure, not statements: the citation's section names them.
_HEADING_LINE = re.compile(r"^[ ]{0,3}#{1,6}(?:[ \t].*)?$", re.MULTILINE)
_BOUNDARY = re.compile(r"""(\S*?)([.!?]+)["'\u201d\u2019)\]]*(?=\s)""")  # closing quotes
_NEXT_CHAR = re.compile(r"\s+(\S)")
_PARAGRAPH = re.compile(r"\n\s*\n")
_DOTTED = re.compile(r"(?:[a-z]\.)+[a-z]")
# Lowercased, without the final dot.
_ABBREVIATIONS = frozenset(
    {"dr", "mr", "mrs", "ms", "prof", "sr", "jr", "st", "vs", "cf", "al", "fig", "figs", "eq"}
    | {"eqs", "ref", "refs", "vol", "pp", "ca", "approx", "inc", "ltd", "co", "corp", "dept"}
)


def split_sentences(text: str) -> list[str]:
    """Split ``text`` into sentences, whitespace inside each collapsed, empty ones dropped.

    Heuristic rules are in the module's comments; the order of sentences is the text's.
    """
    sentences: list[str] = []
    text = _HEADING_LINE.sub("\n", text)  # a blank line: the heading also ends a paragraph
    for paragraph in _PARAGRAPH.split(text):
        start = 0
        for match in _BOUNDARY.finditer(paragraph):
            if _ends_sentence(paragraph, match):
                sentences.append(paragraph[start : match.end()])
                start = match.end()
        sentences.append(paragraph[start:])
    return [s for s in (" ".join(raw.split()) for raw in sentences) if s]


def _ends_sentence(paragraph: str, match: re.Match[str]) -> bool:
    following = _NEXT_CHAR.match(paragraph, match.end())
    if following is None or following.group(1).islower():
        return False
    word, punctuation = match.group(1).lstrip("(['\"\u201c\u2018"), match.group(2)
    if punctuation != ".":
        return True
    is_initial = len(word) == 1 and word.isupper()
    lowered = word.lower()
    return not (is_initial or lowered in _ABBREVIATIONS or _DOTTED.fullmatch(lowered))


def render_quotes(sentences: Sequence[str]) -> str:
    """``"First." [1] "Second." [2]``: each sentence quoted, then its 1-based citation marker."""
    return " ".join(f'"{sentence}" [{n}]' for n, sentence in enumerate(sentences, start=1))


def abstain(reason: AbstainReason = "below_min_score") -> Answer:
    """The answer when the passages hold no answer: :data:`ABSTAIN_TEXT`, no citations."""
    return Answer(text=ABSTAIN_TEXT, answerable=False, citations=[], abstain_reason=reason)


def quote(chosen: Sequence[tuple[Passage, str]]) -> Answer:
    """An answer quoting each ``(passage, sentence)`` in order, with one citation apiece.

    Marker ``[n]`` in the text is ``citations[n - 1]``. ``chosen`` must not be empty.
    """
    citations = [
        Citation(document_id=p.document_id, chunk_id=p.chunk_id, text=sentence, score=p.score)
        for p, sentence in chosen
    ]
    return Answer(
        text=render_quotes([sentence for _, sentence in chosen]),
        answerable=True,
        citations=citations,
    )


def score_sentences(
    sentence_vectors: npt.NDArray[np.float32],
    question_vector: Sequence[float],
    passage_scores: Sequence[float],
) -> npt.NDArray[np.float64]:
    """Each sentence's score: its cosine with the question blended with its passage's score.

    ``sentence_vectors`` rows are unit length; the question vector is normalised here.
    """
    question = np.asarray(question_vector, dtype=np.float64)
    norm = np.linalg.norm(question)
    cosines = sentence_vectors.astype(np.float64) @ (question / norm if norm else question)
    return (1 - PASSAGE_WEIGHT) * cosines + PASSAGE_WEIGHT * np.asarray(passage_scores)


@dataclass(frozen=True)
class _Candidate:
    rank: int  # of its passage, 0 = best
    position: int  # of the sentence within its passage
    text: str
    passage: Passage


class ExtractiveGenerator:
    """A :class:`~retrieval.generation.base.GenerationBackend` that answers by quoting.

    Quotes the ``max_sentences`` best distinct sentences of the first ``max_passages`` passages
    (retrieval order), in passage then text order. Whether to answer at all is the evidence
    gate's decision (:mod:`retrieval.generation.evidence`), taken before any backend runs; with
    ``min_score`` set, passages under it supply no quote and, with none left, it abstains (for
    direct use without the gate). With ``quote_floor`` set, a passage whose cosine is under it
    supplies no quote unless it is the best one (the platform sets the gate's passage floor:
    under it, a passage is about something else). Calls ``embedder.encode`` once per answer.
    """

    def __init__(
        self,
        embedder: Embedder,
        *,
        max_sentences: int = 3,
        min_score: float | None = DEFAULT_MIN_SCORE,
        max_passages: int = MAX_QUOTED_PASSAGES,
        quote_floor: float | None = None,
    ) -> None:
        if max_sentences < 1 or max_passages < 1:
            raise ValueError(
                f"max_sentences and max_passages must be at least 1, got {max_sentences} and "
                f"{max_passages}"
            )
        self._embedder = embedder
        self._max_sentences = max_sentences
        self._min_score = min_score
        self._max_passages = max_passages
        self._quote_floor = quote_floor

    def scoped(self, scope: str) -> Self:
        """This backend answering for ``scope`` (a tenant id): its sentence vectors are cached
        in that tenant's entries (:func:`retrieval.cache.scoped`)."""
        return type(self)(
            scoped(self._embedder, scope),
            max_sentences=self._max_sentences,
            min_score=self._min_score,
            max_passages=self._max_passages,
            quote_floor=self._quote_floor,
        )

    @property
    def name(self) -> str:
        """``extractive``: the backend that calls no model."""
        return "extractive"

    def generate(
        self,
        question: str,
        question_vector: Sequence[float],
        passages: Sequence[Passage],
        *,
        options: GenerationOptions = DEFAULT_OPTIONS,
    ) -> Answer:
        """Quote the sentences that best answer ``question``, or abstain; see the class.

        ``options`` change nothing: a quote is whole sentences, at most ``max_sentences``, and
        nothing is sampled.

        Raises:
            Whatever ``embedder.encode`` raises.
        """
        if not passages:
            return abstain("no_passages")
        floor = self._min_score
        # Passages below the bar are weak evidence: they may not supply a quote either.
        strong = [p for p in passages if floor is None or p.score >= floor][: self._max_passages]
        if strong and self._quote_floor is not None:
            # Beside the best passage, one about something else supplies no quote, however
            # few passages the namespace has to offer ("What do sea otters do while they
            # sleep?" must not also quote a volcano at cosine 0.003).
            top = max(p.score for p in strong)
            strong = [p for p in strong if p.score >= self._quote_floor or p.score == top]
        candidates = _candidates(strong)
        if not candidates:
            return abstain("below_min_score" if floor is not None else "weak_evidence")
        vectors = self._embedder.encode([c.text for c in candidates])
        scores = score_sentences(vectors, question_vector, [c.passage.score for c in candidates])
        best = np.argsort(-scores, kind="stable")[: self._max_sentences]
        chosen = sorted((candidates[i] for i in best), key=lambda c: (c.rank, c.position))
        return quote([(c.passage, c.text) for c in chosen])

    def stream(
        self,
        question: str,
        question_vector: Sequence[float],
        passages: Sequence[Passage],
        *,
        options: GenerationOptions = DEFAULT_OPTIONS,
    ) -> Iterator[StreamEvent]:
        """:meth:`generate` as one delta and the answer: quoting has nothing to stream."""
        answer = self.generate(question, question_vector, passages, options=options)
        yield Delta(answer.text)
        yield answer


def quotable_sentences(passages: Sequence[Passage]) -> list[tuple[int, str]]:
    """``(passage index, sentence)`` for every sentence of ``passages`` an answer may quote, in
    passage then text order: at least three words, each distinct sentence once (overlapping
    chunks repeat sentences; a sentence belongs to the first passage holding it)."""
    seen: set[str] = set()
    quotable = []
    for index, passage in enumerate(passages):
        for sentence in split_sentences(passage.text):
            if len(sentence.split()) >= _MIN_WORDS and sentence not in seen:
                seen.add(sentence)
                quotable.append((index, sentence))
    return quotable


def _candidates(passages: Sequence[Passage]) -> list[_Candidate]:
    positions: dict[int, int] = {}
    candidates = []
    for index, sentence in quotable_sentences(passages):
        position = positions[index] = positions.get(index, -1) + 1
        candidates.append(_Candidate(index, position, sentence, passages[index]))
    return candidates
