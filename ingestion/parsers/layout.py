"""What the structured formats share: text written block by block, and headings as sections.

HTML and DOCX are trees of blocks and inline runs; :class:`TextBuilder` flattens such a tree
into text with blank lines between paragraphs and single newlines between lines, and records
where each heading starts. :func:`nest_sections` turns headings into nested
:class:`~ingestion.document.Section` spans (Markdown uses it too).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from ingestion.document import Section
from ingestion.normalise import normalise_text

# Separators between pieces of text, weakest first: of those requested between two pieces,
# only the strongest is written.
SPACE = " "
CELL = " | "
LINE = "\n"
PARAGRAPH = "\n\n"
_STRENGTH = {"": 0, SPACE: 1, CELL: 2, LINE: 3, PARAGRAPH: 4}
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Heading:
    """A heading: ``level`` 1 is outermost (a document title may use 0), ``start`` its offset."""

    level: int
    title: str
    start: int


def nest_sections(headings: Sequence[Heading], length: int) -> tuple[Section, ...]:
    """The section of each heading, in order, for a text of ``length`` characters.

    A section runs from its heading to the next heading of the same or a higher level (a lower
    or equal ``level`` number), or to the end; its ``path`` holds the titles of the enclosing
    headings, outermost first.
    """
    ends = [length] * len(headings)
    paths: list[tuple[str, ...]] = []
    open_: list[int] = []  # indexes of the headings whose sections are still open
    for index, heading in enumerate(headings):
        while open_ and headings[open_[-1]].level >= heading.level:
            ends[open_.pop()] = heading.start
        open_.append(index)
        paths.append(tuple(headings[i].title for i in open_))
    return tuple(
        Section(path, h.start, end) for path, h, end in zip(paths, headings, ends, strict=True)
    )


def collapse_whitespace(text: str) -> str:
    """``text`` with every run of whitespace made one space, and stripped."""
    return _WHITESPACE.sub(" ", text).strip()


class TextBuilder:
    """Normalised text written piece by piece, with separators owed rather than written.

    A separator (:data:`SPACE`, :data:`CELL`, :data:`LINE`, :data:`PARAGRAPH`) is only
    requested; the strongest one requested since the last text is written just before the next
    text, and none at the start or the end. So empty elements, or nested blocks that each ask
    for a blank line, never leave runs of blank lines or stray spaces.
    """

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._length = 0
        self._owed = ""
        self._headings: list[Heading] = []
        # The open heading: its level, then the part index and offset of its first text.
        self._heading: tuple[int, int | None, int | None] | None = None

    def separate(self, separator: str) -> None:
        """Request ``separator`` between what was written and what comes next."""
        if _STRENGTH[separator] > _STRENGTH[self._owed]:
            self._owed = separator

    def write(self, text: str) -> None:
        """Write inline text: runs of whitespace become one space, as a browser shows them."""
        text = normalise_text(text)
        if text[:1].isspace():
            self.separate(SPACE)
        content = collapse_whitespace(text)
        if content:
            self._append(content)
            if text[-1:].isspace():
                self.separate(SPACE)

    def write_verbatim(self, text: str) -> None:
        """Write preformatted text as one block: its spaces and lines are kept."""
        content = normalise_text(text).lstrip("\n").rstrip()
        if content:
            self.separate(PARAGRAPH)
            self._append(content)
            self.separate(PARAGRAPH)

    def start_heading(self, level: int) -> None:
        """Start a heading block; its text is what is written until :meth:`end_heading`.

        A heading inside a heading is part of the outer one's text.
        """
        if self._heading is None:
            self.separate(PARAGRAPH)
            self._heading = (level, None, None)

    def end_heading(self) -> None:
        """End the open heading; one without text is no heading."""
        if self._heading is None:
            return
        level, first_part, start = self._heading
        self._heading = None
        if first_part is not None and start is not None:
            title = collapse_whitespace("".join(self._parts[first_part:]))
            self._headings.append(Heading(level, title, start))
        self.separate(PARAGRAPH)

    def build(self) -> tuple[str, tuple[Heading, ...]]:
        """The text written, and the headings found in it, in order."""
        text = "".join(self._parts)
        headings = tuple(self._headings)
        # Each piece is normalised, but a combining mark that opens one (``e<b>\u0301</b>``)
        # composes with the end of the previous one only when the whole is normalised.
        if not unicodedata.is_normalized("NFC", text):
            text = normalise_text(text)
            headings = tuple(
                Heading(h.level, h.title, len(normalise_text("".join(self._parts)[: h.start])))
                for h in headings
            )
        return text, headings

    def _append(self, content: str) -> None:
        if self._length and self._owed:
            self._parts.append(self._owed)
            self._length += len(self._owed)
        self._owed = ""
        if self._heading is not None and self._heading[1] is None:
            self._heading = (self._heading[0], len(self._parts), self._length)
        self._parts.append(content)
        self._length += len(content)
