"""Cutting a parsed document into chunks the embedding model reads whole.

The text is first cut into *atoms*: runs of non-whitespace (also cut after CJK full stops,
which are not followed by spaces, and into pieces when very long), each counted once with
the model's tokenizer. Between two atoms lies a break whose strength comes from the
structure: section start > blank line > sentence end > line end > space > inside a word.
Chunks are packed from the per-atom counts, end at the strongest break that keeps them
reasonably full, and are then verified with one real count each.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from enum import IntEnum
from itertools import accumulate

from ingestion.document import Chunk, Page, ParsedDocument, Section

# Ideographic full stop and fullwidth ! and ?: CJK sentence ends, with no space after them.
_CJK_ENDS = "\u3002\uff01\uff1f"
_ATOM = re.compile(rf"[^\s{_CJK_ENDS}]*+[{_CJK_ENDS}]++|[^\s{_CJK_ENDS}]++")
# Longer runs without spaces (URLs, base64, CJK without punctuation) are counted in pieces
# of this many characters: each character is then tokenized about twice (piece, then chunk)
# however long the run. Packing still prefers any other break to a cut between pieces.
_PIECE_CHARS = 32
_SENTENCE_END = frozenset(".!?\u2026" + _CJK_ENDS)
# Closing quotes and brackets that may follow a sentence end (ASCII, guillemet, curly, CJK).
_CLOSERS = "\"')]}\u00bb\u201d\u2019\u300d\u300f"


class Break(IntEnum):
    """How strong a break between two atoms is; chunks prefer to end at strong ones."""

    CHAR = 0
    WORD = 1
    LINE = 2
    SENTENCE = 3
    PARAGRAPH = 4
    SECTION = 5
    END = 6


# A break qualifies as a chunk end only once the chunk holds this share of its token budget,
# so preferring structure never yields a run of tiny chunks. Section starts qualify early: a
# chunk that stays inside one section is cited correctly, which is worth a smaller chunk.
_MIN_FILL = {Break.SECTION: 0.1, Break.END: 0.0}
_DEFAULT_MIN_FILL = 0.5


def chunk(
    doc: ParsedDocument,
    *,
    max_tokens: int,
    overlap_tokens: int,
    count_tokens: Callable[[str], int],
) -> list[Chunk]:
    """Cut ``doc.text`` into chunks of at most ``max_tokens`` model tokens.

    ``count_tokens`` must return the model's token count of a text *including* its special
    tokens (``count_tokens("")`` is their number), and be deterministic: counts are cached.

    Guarantees:
        - chunks are in document order, ``ordinal`` is 0..n-1 and starts strictly increase;
        - ``doc.text[c.start:c.end] == c.text``, with no leading or trailing whitespace, and
          no chunk is empty;
        - ``count_tokens(c.text) == c.token_count <= max_tokens``, checked with a real count
          for every chunk: nothing is ever truncated;
        - every non-whitespace character of ``doc.text`` lies in at least one chunk;
        - each chunk after the first starts up to about ``overlap_tokens`` before the previous
          one's end (at a sentence start when one is in reach, else at a word), unless the
          previous one ended at a section start; each chunk ends past the previous one's end,
          so overlap never stalls progress;
        - ``c.section`` is the innermost section containing ``c.start``, its path joined
          with `` > `` (None outside every section);
        - ``c.page`` is the number of the last page starting at or before ``c.start`` (the
          page containing it, as chunks never start in the whitespace between pages), or
          None when the document has no pages.

    Chunks prefer to end at a section start, then a blank line, a sentence end, a line end, a
    space, and only inside a run with no spaces (such as a long URL or CJK text) at any
    character. The tokenizer runs once per distinct word (or 32-character piece of a
    longer run) plus about once per chunk, so the cost is linear in the text.

    Raises:
        ValueError: ``max_tokens`` leaves no room for text after the special tokens, a single
            character needs more than that, or ``overlap_tokens`` is negative or not below
            ``max_tokens``.
    """
    special = count_tokens("")
    if max_tokens - special < 1:
        raise ValueError(
            f"max_tokens={max_tokens} leaves no room for text: the model adds {special} "
            "special tokens to every chunk"
        )
    if not 0 <= overlap_tokens < max_tokens:
        raise ValueError(f"overlap_tokens must be in [0, {max_tokens}), got {overlap_tokens}")
    atoms = _Atoms(doc, max_tokens=max_tokens, count_tokens=count_tokens)
    spans = _Packer(atoms, max_tokens=max_tokens, overlap_tokens=overlap_tokens).spans()
    starts = [start for start, _, _ in spans]
    labels = _section_labels(doc.sections, starts)
    pages = _page_numbers(doc.pages, starts)
    return [
        Chunk(ordinal, doc.text[start:end], start, end, tokens, label, page)
        for ordinal, ((start, end, tokens), label, page) in enumerate(
            zip(spans, labels, pages, strict=True)
        )
    ]


class _Atoms:
    """The atoms of a text: offsets, token counts without special tokens, and breaks before."""

    def __init__(
        self, doc: ParsedDocument, *, max_tokens: int, count_tokens: Callable[[str], int]
    ) -> None:
        self.text = doc.text
        self.max_tokens = max_tokens
        self.special = count_tokens("")
        self._count_tokens = count_tokens
        self._cache: dict[str, int] = {}
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.tokens: list[int] = []
        self.breaks: list[Break] = []  # breaks[k] lies before atom k; breaks[0] is unused
        for match in _ATOM.finditer(self.text):
            start, end = match.span()
            brk = self._break_before(start)
            for piece in range(start, end, _PIECE_CHARS):
                self._add_fitting(piece, min(piece + _PIECE_CHARS, end), brk)
                brk = Break.CHAR
        self.breaks.append(Break.END)
        for section in doc.sections:
            index = bisect_left(self.starts, section.start)
            if 0 < index < len(self.starts):
                self.breaks[index] = Break.SECTION
        self.prefix = [0, *accumulate(self.tokens)]

    def __len__(self) -> int:
        return len(self.starts)

    def count(self, text: str) -> int:
        """The real count, with special tokens; words repeat, so distinct texts are cached."""
        tokens = self._cache.get(text)
        if tokens is None:
            tokens = self._cache[text] = self._count_tokens(text)
        return tokens

    def _add(self, start: int, end: int, tokens: int, brk: Break) -> None:
        self.starts.append(start)
        self.ends.append(end)
        self.tokens.append(max(tokens, 0))
        self.breaks.append(brk)

    def _break_before(self, start: int) -> Break:
        if not self.ends:
            return Break.END
        previous_end = self.ends[-1]
        newlines = self.text.count("\n", previous_end, start)
        if newlines >= 2:
            return Break.PARAGRAPH
        previous = self.text[self.starts[-1] : previous_end].rstrip(_CLOSERS)
        if previous[-1:] in _SENTENCE_END:
            return Break.SENTENCE
        return Break.LINE if newlines else Break.WORD

    def _add_fitting(self, start: int, end: int, brk: Break) -> None:
        """Add ``text[start:end]`` as one atom, or as several if the model cannot read it whole.

        Only small limits, or characters worth several tokens, need the cut.
        """
        tokens = self.count(self.text[start:end])
        while tokens > self.max_tokens:
            cut, cut_tokens = self._longest_fitting(start, end)
            self._add(start, cut, cut_tokens - self.special, brk)
            start, brk = cut, Break.CHAR
            tokens = self.count(self.text[start:end])
        self._add(start, end, tokens - self.special, brk)

    def _longest_fitting(self, start: int, end: int) -> tuple[int, int]:
        """A cut ``e`` in ``(start, end)`` with ``text[start:e]`` within the limit, by bisection.

        Counts need not grow with length, so the cut is near the longest rather than the
        longest; every cut it returns was counted.
        """
        fits, fits_tokens, too_long = start, 0, end
        while too_long - fits > 1:
            middle = (fits + too_long) // 2
            tokens = self.count(self.text[start:middle])
            if tokens <= self.max_tokens:
                fits, fits_tokens = middle, tokens
            else:
                too_long = middle
        if fits == start:
            raise ValueError(
                f"max_tokens={self.max_tokens} cannot hold the character "
                f"{self.text[start]!r} at offset {start}"
            )
        return fits, fits_tokens


class _Packer:
    """Packs atoms into chunk spans: ``(start, end, token_count)`` in document order."""

    def __init__(self, atoms: _Atoms, *, max_tokens: int, overlap_tokens: int) -> None:
        self.atoms = atoms
        self.max_tokens = max_tokens
        self.budget = max_tokens - atoms.special  # tokens of text, special tokens excluded
        self.overlap = overlap_tokens
        self.section_starts = [k for k, brk in enumerate(atoms.breaks) if brk == Break.SECTION]

    def spans(self) -> list[tuple[int, int, int]]:
        atoms = self.atoms
        spans = []
        first = end = 0  # the next chunk's first atom; the atom the previous chunk ended before
        while end < len(atoms):
            first, end, tokens = self._fit(first, min_end=end + 1)
            spans.append((atoms.starts[first], atoms.ends[end - 1], tokens))
            first = self._overlap_start(first, end)
        return spans

    def _fit(self, first: int, *, min_end: int) -> tuple[int, int, int]:
        """Choose the chunk from atom ``first``: ``(first, end, real count)``, end >= min_end.

        ``first`` moves up to ``min_end - 1`` (no overlap) when overlapping leaves no room.
        """
        atoms, prefix = self.atoms, self.atoms.prefix
        limit, cap = self.budget, len(atoms)
        while True:
            last = min(bisect_right(prefix, prefix[first] + limit, lo=first) - 1, cap)
            if last < min_end:
                if first < min_end - 1:
                    first, limit, cap = min_end - 1, self.budget, len(atoms)
                    continue
                last = min_end  # one atom alone: its real count was checked on the way in
            end = self._best_end(first, min_end, last, limit)
            tokens = atoms.count(atoms.text[atoms.starts[first] : atoms.ends[end - 1]])
            if tokens <= self.max_tokens:
                return first, end, tokens
            # Counts need not add up (WordPiece sees across a cut inside a word; some counters
            # count spaces): lower the estimate in proportion, always by one atom or more.
            estimate = prefix[end] - prefix[first]
            limit = estimate * self.budget // max(tokens - atoms.special, 1)
            cap = end - 1

    def _best_end(self, first: int, min_end: int, last: int, limit: int) -> int:
        """The strongest break in ``[min_end, last]`` that fills enough; the latest on ties."""
        atoms, base = self.atoms, self.atoms.prefix[first]
        best = last
        for end in range(last - 1, min_end - 1, -1):
            brk = atoms.breaks[end]
            min_fill = _MIN_FILL.get(brk, _DEFAULT_MIN_FILL) * limit
            if brk > atoms.breaks[best] and atoms.prefix[end] - base >= min_fill:
                best = end
        return best

    def _overlap_start(self, first: int, end: int) -> int:
        """Where the chunk after ``[first, end)`` starts: up to ``overlap`` tokens back.

        The first sentence start in that reach if there is one, else as far back as it goes.
        Never at or before ``first`` (starts strictly increase), never back across a section
        start (a chunk is labelled by where it starts), and never so far back that atom ``end``
        no longer fits.
        """
        atoms, prefix = self.atoms, self.atoms.prefix
        if end >= len(atoms) or self.overlap == 0 or atoms.breaks[end] >= Break.SECTION:
            return end
        floor = first + 1
        inside = bisect_left(self.section_starts, end) - 1
        if inside >= 0:
            floor = max(floor, self.section_starts[inside])
        target = max(prefix[end] - self.overlap, prefix[end + 1] - self.budget)
        furthest = bisect_left(prefix, target, lo=floor, hi=end)
        return next(
            (k for k in range(furthest, end) if atoms.breaks[k] >= Break.SENTENCE), furthest
        )


def _section_labels(sections: tuple[Section, ...], starts: list[int]) -> list[str | None]:
    """The innermost section containing each of ``starts`` (ascending), as ``A > B``."""
    ordered = sorted(sections, key=lambda s: (s.start, len(s.path)))
    labels: list[str | None] = []
    open_: list[Section] = []
    following = 0
    for position in starts:
        while following < len(ordered) and ordered[following].start <= position:
            open_.append(ordered[following])
            following += 1
        open_ = [s for s in open_ if s.end > position]  # later starts are further on
        labels.append(" > ".join(open_[-1].path) or None if open_ else None)
    return labels


def _page_numbers(pages: tuple[Page, ...], starts: list[int]) -> list[int | None]:
    """The number of the page each of ``starts`` lies on (None for a document without pages)."""
    if not pages:
        return [None] * len(starts)
    page_starts = [page.start for page in pages]
    return [pages[max(bisect_right(page_starts, position) - 1, 0)].number for position in starts]
