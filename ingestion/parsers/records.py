"""JSON and JSONL: records with a text field, such as the BEIR corpora, and any other JSON.

:func:`split_upload` decides how an upload becomes documents. JSONL, a JSON object with a
string text field, and a JSON array of objects some of which have one, hold records: one
document each, stored as that value alone (compact JSON), its id field the external id and its
other fields metadata. Any other JSON file, an object without the text field say, is one
document as it is; asked for (``records=True``, :func:`split_records`), any JSON file is split:
a record per element of a top-level array, or the top-level value as one.

:func:`parse_json` reads a document at indexing: an object with a string text field is a
record, its title then its text; any other value is flattened (:mod:`.flatten`), one ``path:
value`` line per leaf, its title field (if any) the title. So every valid JSON file is indexed,
or fails with a reason saying what to change. The field names are configured
(:class:`~ingestion.config.IngestionConfig`).
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from typing import Any

from ingestion.config import DEFAULT_INGESTION, IngestionConfig
from ingestion.document import ParsedDocument
from ingestion.errors import DocumentTooLargeError, ParseError
from ingestion.normalise import normalise_text
from ingestion.parsers.flatten import flatten, loads
from ingestion.parsers.text import decode_text

JSON = "application/json"
JSONL = "application/x-ndjson"
# A nested object of this name is metadata itself: its fields join the others, flat.
METADATA_FIELD = "metadata"

# Any: a JSON object's values are whatever JSON holds.
JsonObject = dict[str, Any]

# JSON may escape a lone UTF-16 surrogate ("\ud800"), which no UTF-8 text, database or
# tokenizer takes. A pair is one character once read, so any surrogate left is a lone one.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class Record:
    """One value of a JSON or JSONL upload, ready to be stored as its own document.

    ``data`` is the value alone as compact UTF-8 JSON (media type ``application/json``). For
    an object, ``metadata`` holds its fields other than text, title and id, a nested
    ``metadata`` object merged in flat (a top-level field wins a clash); ``external_id`` is the
    id field as a string; ``title`` the title field if it is a string. Any other value has
    none of them.
    """

    data: bytes
    metadata: JsonObject
    external_id: str | None
    title: str | None


def split_upload(
    data: bytes,
    *,
    media_type: str,
    config: IngestionConfig = DEFAULT_INGESTION,
    records: bool = False,
) -> list[Record] | None:
    """The records of a JSON or JSONL upload, in order; None when it is one document.

    JSONL always holds records (:func:`split_records`). A JSON value holds records when it is
    an object with a string text field (one record), or a non-empty array of objects at least
    one of which has one (a record each: one record that lacks its text must not turn a
    corpus into one long document). Any other value, an array of objects none of which has
    the text field included, is one document, like a file of any other format: nothing tells
    its elements apart as documents, and ``records=True`` says they are, splitting any JSON.

    Raises:
        ParseError: the bytes are not text or not valid JSON (the message names the line, and
            for JSONL the line number), or the file holds no record where records are due.
        DocumentTooLargeError: more than ``config.max_records`` records.
    """
    return _split(data, media_type=media_type, config=config, records=records)


def split_records(
    data: bytes, *, media_type: str, config: IngestionConfig = DEFAULT_INGESTION
) -> list[Record]:
    """Split a JSON or JSONL upload into its records, in order, whatever their shape.

    ``media_type`` ``application/x-ndjson`` reads one record per non-blank line; anything else
    reads one JSON value: an array is a record per element, any other value one record. A
    record without a string text field is not refused: :func:`parse_json` flattens it.

    Raises:
        ParseError: as :func:`split_upload`.
        DocumentTooLargeError: more than ``config.max_records`` records.
    """
    return _split(data, media_type=media_type, config=config, records=True) or []


def _split(
    data: bytes, *, media_type: str, config: IngestionConfig, records: bool
) -> list[Record] | None:
    text = decode_text(data)
    if media_type == JSONL:
        values = _lines(text, config, exact=False)
    else:
        value = _loads(text, where="the file", exact=False)
        if not (records or _holds_records(value, config)):
            return None
        values = value if isinstance(value, list) else [value]
        _check_count(len(values), config)
    if not values:
        raise ParseError("the file holds no JSON records")
    return [_record(value, config) for value in values]


def parse_json(data: bytes, config: IngestionConfig) -> ParsedDocument:
    """Parse one JSON document: a record, or any other JSON value, flattened.

    An object whose text field is a string is a record: that field is the text, the title
    field the title; with ``config.json_title_in_text`` the text starts with the title and a
    blank line, so that the title is searchable and citable too. Any other value is flattened
    (:func:`~ingestion.parsers.flatten.flatten`): one ``path: value`` line per string, number
    and boolean, in document order, an object's title field (if a string) the title.

    Raises:
        ParseError: not valid JSON, nested too deeply, or without a string, number or boolean.
        DocumentTooLargeError: the flattened text passes ``config.max_chars``.
    """
    return _document(_loads(decode_text(data), where="the file", exact=True), config)


def parse_jsonl(data: bytes, config: IngestionConfig) -> ParsedDocument:
    """Parse a JSONL file holding one record, like :func:`parse_json`; several must be split.

    Raises:
        ParseError: as :func:`parse_json`, or the file holds no line or several.
    """
    values = _lines(decode_text(data), config, exact=True)
    if len(values) != 1:
        raise ParseError(
            f"the file holds {len(values)} JSON records; upload it to have one document each"
        )
    return _document(values[0], config)


def sniff_json(text: str) -> str | None:
    """``application/json`` for a JSON object or array, ``application/x-ndjson`` for lines of
    JSON objects, else None."""
    stripped = text.lstrip()
    if stripped[:1] not in ("{", "["):
        return None
    try:
        value = json.loads(stripped)
    except (ValueError, RecursionError):
        lines = [line for line in stripped.split("\n") if line.strip()]
        if stripped[0] == "{" and len(lines) > 1 and all(_is_object(line) for line in lines):
            return JSONL
        return None
    return JSON if isinstance(value, dict | list) else None


def _document(value: Any, config: IngestionConfig) -> ParsedDocument:  # Any: any JSON value
    if _is_record(value, config):
        title = _title(value, config)
        body = normalise_text(value[config.json_text_field])
        if title and config.json_title_in_text:
            body = f"{title}\n\n{body}"
        return ParsedDocument(text=body, media_type=JSON, title=title)
    text = normalise_text(flatten(value, max_chars=config.max_chars))
    if not text.strip():
        raise ParseError(
            "the JSON holds no text: no string, number or boolean value, only empty objects, "
            "arrays or nulls; put the text in a string value "
            f"(or a field {config.json_text_field!r}, SHOAL_INGESTION__JSON_TEXT_FIELD)"
        )
    title = _title(value, config) if isinstance(value, dict) else None
    return ParsedDocument(text=text, media_type=JSON, title=title)


def _is_record(value: object, config: IngestionConfig) -> bool:
    return isinstance(value, dict) and isinstance(value.get(config.json_text_field), str)


def _holds_records(value: object, config: IngestionConfig) -> bool:
    if not isinstance(value, list):
        return _is_record(value, config)
    return all(isinstance(item, dict) for item in value) and any(
        _is_record(item, config) for item in value
    )


def _lines(text: str, config: IngestionConfig, *, exact: bool) -> list[Any]:  # Any: JSON values
    values: list[Any] = []
    # Lines end at "\n" only: JSON strings may hold U+2028 and the like, which splitlines cuts.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        values.append(_loads(line, where=f"line {number}", exact=exact))
        _check_count(len(values), config)
    return values


def _loads(text: str, *, where: str, exact: bool) -> Any:  # Any: whatever the JSON holds
    """The JSON value of ``text``; ``exact``: numbers as :class:`~.flatten.Number` literals,
    for indexing, else as Python numbers, for metadata."""
    try:
        value = loads(text) if exact else json.loads(text)
    except json.JSONDecodeError as exc:
        at = f"column {exc.colno}" if where.startswith("line") else f"line {exc.lineno}"
        raise ParseError(f"{where}: not valid JSON: {exc.msg} ({at})") from exc
    except RecursionError as exc:
        raise ParseError(f"{where}: JSON nested too deeply") from exc
    except ValueError as exc:
        # Python reads an integer of at most 4,300 digits; metadata needs Python numbers, so
        # only indexing (``exact``) reads any literal as it is.
        raise ParseError(
            f"{where}: a number has more than {sys.get_int_max_str_digits()} digits; "
            "write it as a string"
        ) from exc
    return _without_lone_surrogates(value) if _SURROGATE_ESCAPE.search(text) else value


def _without_lone_surrogates(value: Any) -> Any:  # Any: whatever the JSON holds
    """``value`` with each lone surrogate in its strings and keys made U+FFFD, as an
    undecodable byte of a text file is; containers are fixed in place, without recursion."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    # Any: JSON objects and arrays, indexed alike by their keys or positions.
    stack: list[Any] = [value] if isinstance(value, dict | list) else []
    while stack:
        node = stack.pop()
        pairs = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
        if isinstance(node, dict):
            node.clear()
        for key, child in pairs:
            if isinstance(child, str):
                child = _SURROGATE.sub("\ufffd", child)
            elif isinstance(child, dict | list):
                stack.append(child)
            node[_SURROGATE.sub("\ufffd", key) if isinstance(key, str) else key] = child
    return value


def _is_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except (ValueError, RecursionError):
        return False


def _check_count(count: int, config: IngestionConfig) -> None:
    if count > config.max_records:
        raise DocumentTooLargeError(
            f"the file holds more than {config.max_records} JSON records; the limit is "
            f"{config.max_records} (SHOAL_INGESTION__MAX_RECORDS)"
        )


def _record(value: Any, config: IngestionConfig) -> Record:  # Any: any JSON value
    if not isinstance(value, dict):
        return Record(data=_compact(value), metadata={}, external_id=None, title=None)
    obj: JsonObject = value
    reserved = {config.json_text_field, config.json_title_field, config.json_id_field}
    nested = obj.get(METADATA_FIELD)
    metadata = dict(nested) if isinstance(nested, dict) else {}
    metadata.update(
        (key, value)
        for key, value in obj.items()
        if key not in reserved and not (key == METADATA_FIELD and isinstance(value, dict))
    )
    return Record(
        data=_compact(obj),
        metadata=metadata,
        external_id=_external_id(obj.get(config.json_id_field)),
        title=_title(obj, config),
    )


def _compact(value: Any) -> bytes:  # Any: any JSON value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _external_id(ident: object) -> str | None:
    if ident is None or isinstance(ident, str):
        return ident
    return json.dumps(ident)  # 4983 -> "4983", true -> "true"


def _title(obj: JsonObject, config: IngestionConfig) -> str | None:
    title = obj.get(config.json_title_field)
    if not isinstance(title, str):
        return None
    return " ".join(normalise_text(title).split()) or None
