"""A JSON value as text: one ``path: value`` line per leaf, in document order.

How a JSON file that is not a record (no string text field) is indexed, so that every word in
it can be found. The choices, each made for whoever reads a chunk or a citation:

- Paths read as in JavaScript and jq: keys joined by ``.``, array elements as ``[i]``
  (``authors[0].name: Ada``). An index is told apart from a key named ``0``, and the lines
  of one element share a prefix, so ``authors[1].name`` and ``authors[1].born`` read as one
  author. Keys are written as they are: a path is for reading, not for addressing.
- Strings, numbers and booleans are leaves. A number keeps its literal (``1.50``, ``1e400``, a
  5,000-digit integer), as :func:`loads` reads it. A boolean reads ``true`` or ``false``: it is
  a fact a question may ask about (``"vegan": true``). ``null`` and blank strings say nothing
  and leave no line; nor do empty objects and arrays.
- A top-level scalar has no path: ``"just a string"`` is the line ``just a string``, ``42``
  the line ``42``; a top-level array's elements are ``[0]``, ``[1]``, ...
- Nesting deeper than :data:`MAX_DEPTH` fails with a reason; the walk keeps its own stack, so
  no depth crashes it, and text past the character limit fails as soon as it is reached, so a
  long key repeated on every line under it cannot fill memory first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ingestion.errors import DocumentTooLargeError, ParseError

# Deepest nesting flattened. Real documents nest a handful of levels (a book's chapters'
# sections' paragraphs); past 64, each line would mostly repeat its path.
MAX_DEPTH = 64


@dataclass(frozen=True, slots=True)
class Number:
    """A JSON number as written in the file: its literal, never rounded by a float."""

    literal: str


def loads(text: str) -> Any:  # Any: whatever the JSON holds
    """``json.loads``, each number a :class:`Number` (so no integer is too long to read).

    Raises:
        ValueError: not valid JSON (``json.JSONDecodeError``).
        RecursionError: nested deeper than the JSON parser goes (about 1,000 levels).
    """
    return json.loads(text, parse_int=Number, parse_float=Number, parse_constant=Number)


@dataclass(frozen=True, slots=True)
class _Step:
    """One step of a path; a leaf's path is its chain of steps, built into text only for the
    leaf's line (a container's children share its steps instead of copying its path)."""

    parent: _Step | None
    segment: str


def flatten(value: Any, *, max_chars: int) -> str:  # Any: whatever the JSON holds
    """The leaves of ``value`` (as :func:`loads` returns it), one ``path: value`` line each.

    Returns:
        The lines joined by ``\\n``, in document order; empty when there is no leaf.

    Raises:
        ParseError: containers nested deeper than :data:`MAX_DEPTH`.
        DocumentTooLargeError: the text would pass ``max_chars`` characters.
    """
    lines: list[str] = []
    size = 0
    # (path, node, depth); children are pushed in reverse so that they pop in order.
    stack: list[tuple[_Step | None, Any, int]] = [(None, value, 0)]
    while stack:
        path, node, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth == MAX_DEPTH:
                raise ParseError(
                    f"the JSON nests objects and arrays more than {MAX_DEPTH} levels deep; "
                    "flatten it, or upload its text as a text file"
                )
            if isinstance(node, dict):
                children = [
                    (_Step(path, key if path is None else f".{key}"), child)
                    for key, child in node.items()
                ]
            else:
                children = [(_Step(path, f"[{index}]"), child) for index, child in enumerate(node)]
            stack.extend((step, child, depth + 1) for step, child in reversed(children))
            continue
        leaf = _leaf(node)
        if leaf is None:
            continue
        segments = _segments(path)
        size += sum(map(len, segments)) + 2 * bool(segments) + len(leaf) + 1
        if size > max_chars:
            raise DocumentTooLargeError(
                f"document has more than {max_chars} characters of text; the limit is "
                f"{max_chars} (SHOAL_INGESTION__MAX_CHARS)"
            )
        lines.append(f"{''.join(segments)}: {leaf}" if segments else leaf)
    return "\n".join(lines)


def _leaf(node: object) -> str | None:
    if isinstance(node, str):
        return node if node.strip() else None
    if isinstance(node, Number):
        return node.literal
    if isinstance(node, bool):
        return "true" if node else "false"
    if isinstance(node, int | float):  # a value from plain json.loads
        return json.dumps(node)
    return None  # null


def _segments(path: _Step | None) -> list[str]:
    segments = []
    while path is not None:
        segments.append(path.segment)
        path = path.parent
    segments.reverse()
    return segments
