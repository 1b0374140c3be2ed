"""Markdown: the source text itself, with sections found by a CommonMark parser.

``ParsedDocument.text`` is the normalised Markdown source, not a rendering, so chunk offsets
point into the file the user uploaded. markdown-it-py finds the headings (ATX and setext, never
inside code blocks); its line maps become character offsets.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence

from markdown_it import MarkdownIt
from markdown_it.token import Token

from ingestion.document import ParsedDocument
from ingestion.normalise import normalise_text
from ingestion.parsers.layout import Heading, collapse_whitespace, nest_sections
from ingestion.parsers.text import decode_text

MEDIA_TYPE = "text/markdown"
# CommonMark only: the "default" preset's extras (tables, strikethrough) add no headings.
_PARSER = MarkdownIt("commonmark")


def parse_markdown(data: bytes) -> ParsedDocument:
    """Parse a Markdown file into its normalised source, title and heading sections.

    Each section runs from its heading's first line to the next heading of the same or a higher
    level (or the end), and its ``path`` holds the titles of the enclosing headings, outermost
    first. Titles are the headings' inline text without markup. Only document-level headings
    count: one inside a block quote or list item is quoted or listed content, not structure.
    Empty headings (a bare ``#``) are ignored. ``title`` is the first level-1 heading's text.

    Raises:
        ParseError: the bytes cannot be decoded.
    """
    text = normalise_text(decode_text(data))
    headings = _headings(text)
    title = next((h.title for h in headings if h.level == 1), None)
    return ParsedDocument(
        text=text, media_type=MEDIA_TYPE, title=title, sections=nest_sections(headings, len(text))
    )


def _headings(text: str) -> list[Heading]:
    line_starts = [0, *(m.end() for m in re.finditer("\n", text))]
    tokens = _PARSER.parse(text)
    headings = []
    for opening, inline in itertools.pairwise(tokens):
        if opening.type != "heading_open" or opening.level != 0 or opening.map is None:
            continue
        title = _inline_text(inline.children or [])
        if title:
            start = line_starts[opening.map[0]]
            headings.append(Heading(level=int(opening.tag[1:]), title=title, start=start))
    return headings


def _inline_text(children: Sequence[Token]) -> str:
    parts = []
    for child in children:
        if child.type in ("text", "code_inline", "image"):  # an image's content is its alt text
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append(" ")
    return collapse_whitespace("".join(parts))
