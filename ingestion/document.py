"""What parsing produces and chunking consumes."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Section:
    """A heading's span in the parsed text: ``text[start:end]`` is the section, heading included.

    ``path`` is the chain of headings from the outermost to this one (``("Intro", "Scope")``).
    """

    path: tuple[str, ...]
    start: int
    end: int


@dataclass(frozen=True)
class Page:
    """A page of a paginated document (PDF): ``text[start:end]`` is its text.

    ``number`` counts from 1, as readers do. A page without text has ``start == end``.
    """

    number: int
    start: int
    end: int


@dataclass(frozen=True)
class ParsedDocument:
    """A document reduced to normalised text plus the structure worth citing.

    ``text`` is already normalised (:func:`ingestion.normalise.normalise_text`); chunk offsets
    index into it. ``sections`` are ordered by ``start`` and may nest. ``pages`` are in order,
    never overlap, and are empty for formats without pages.
    """

    text: str
    media_type: str
    title: str | None = None
    sections: tuple[Section, ...] = field(default_factory=tuple)
    pages: tuple[Page, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Chunk:
    """A span of a parsed document small enough for the embedding model.

    ``document.text[start:end] == text`` always holds. ``ordinal`` counts from 0 in document
    order. ``section`` is the innermost heading path containing ``start``, joined with `` > ``.
    ``page`` is the number of the page containing ``start`` (None without pages).
    """

    ordinal: int
    text: str
    start: int
    end: int
    token_count: int
    section: str | None = None
    page: int | None = None
