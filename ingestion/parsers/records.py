"""JSON and JSONL: records with a text field, such as the BEIR corpora.

An upload of JSON Lines (one object per line), a JSON array of objects, or a single object is
split by :func:`split_records` into one record per object; each record becomes its own
document, stored as that object alone (compact JSON), and :func:`parse_json` reads it at
indexing. Which fields hold the text, title and id is configured
(:class:`~ingestion.config.IngestionConfig`); every other field is metadata.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ingestion.config import DEFAULT_INGESTION, IngestionConfig
from ingestion.document import ParsedDocument
from ingestion.errors import DocumentTooLargeError, ParseError
from ingestion.normalise import normalise_text
from ingestion.parsers.text import decode_text

JSON = "application/json"
JSONL = "application/x-ndjson"
# A nested object of this name is metadata itself: its fields join the others, flat.
METADATA_FIELD = "metadata"

# Any: a JSON object's values are whatever JSON holds.
JsonObject = dict[str, Any]


@dataclass(frozen=True)
class Record:
    """One object of a JSON or JSONL upload, ready to be stored as its own document.

    ``data`` is the object alone as compact UTF-8 JSON (media type ``application/json``);
    ``metadata`` holds its fields other than text, title and id, a nested ``metadata`` object
    merged in flat (a top-level field wins a clash); ``external_id`` is the id field as a
    string; ``title`` the title field if it is a string.
    """

    data: bytes
    metadata: JsonObject
    external_id: str | None
    title: str | None


def split_records(
    data: bytes, *, media_type: str, config: IngestionConfig = DEFAULT_INGESTION
) -> list[Record]:
    """Split a JSON or JSONL upload into its records, in order.

    ``media_type`` ``application/x-ndjson`` reads one object per non-blank line; anything else
    reads one JSON value: an array of objects (one record each) or an object (one record).
    Records are not checked for a text field here: a record without one fails alone, at
    indexing, with a reason naming the field.

    Raises:
        ParseError: the bytes are not text, not valid JSON (the message names the line, and
            for JSONL the line number), a value is not an object, or there is no record.
        DocumentTooLargeError: more than ``config.max_records`` records.
    """
    return [_record(obj, config) for obj in _objects(data, media_type=media_type, config=config)]


def parse_json(data: bytes, config: IngestionConfig) -> ParsedDocument:
    """Parse one JSON record: the text field is the text, the title field the title.

    With ``config.json_title_in_text`` the text starts with the title and a blank line, so that
    the title is searchable and citable too. A file of several records must be split first.

    Raises:
        ParseError: not one JSON object, or its text field is missing or not a string.
    """
    return _parse(data, JSON, config)


def parse_jsonl(data: bytes, config: IngestionConfig) -> ParsedDocument:
    """Parse a JSONL file holding one record, like :func:`parse_json`."""
    return _parse(data, JSONL, config)


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


def _parse(data: bytes, media_type: str, config: IngestionConfig) -> ParsedDocument:
    objects = _objects(data, media_type=media_type, config=config)
    if len(objects) != 1:
        raise ParseError(
            f"the file holds {len(objects)} JSON records; upload it to have one document each"
        )
    obj = objects[0]
    text = obj.get(config.json_text_field)
    if not isinstance(text, str):
        found = "has none" if text is None else f"has {_kind(text)}"
        raise ParseError(
            f"a JSON record needs a string field {config.json_text_field!r} with its text; "
            f"this one {found} (SHOAL_INGESTION__JSON_TEXT_FIELD)"
        )
    title = _title(obj, config)
    body = normalise_text(text)
    if title and config.json_title_in_text:
        body = f"{title}\n\n{body}"
    return ParsedDocument(text=body, media_type=JSON, title=title)


def _objects(data: bytes, *, media_type: str, config: IngestionConfig) -> list[JsonObject]:
    text = decode_text(data)
    objects = _lines(text, config) if media_type == JSONL else _document(text, config)
    if not objects:
        raise ParseError("the file holds no JSON records")
    return objects


def _lines(text: str, config: IngestionConfig) -> list[JsonObject]:
    objects: list[JsonObject] = []
    # Lines end at "\n" only: JSON strings may hold U+2028 and the like, which splitlines cuts.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        value = _loads(line, where=f"line {number}")
        if not isinstance(value, dict):
            raise ParseError(f"line {number}: a JSONL line must be an object, not {_kind(value)}")
        objects.append(value)
        _check_count(len(objects), config)
    return objects


def _document(text: str, config: IngestionConfig) -> list[JsonObject]:
    value = _loads(text, where="the file")
    if isinstance(value, dict):
        return [value]
    if not isinstance(value, list):
        raise ParseError(f"JSON must be an object or an array of objects, not {_kind(value)}")
    _check_count(len(value), config)
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise ParseError(f"element {index} of the JSON array is {_kind(item)}, not an object")
    return value


def _loads(text: str, *, where: str) -> Any:  # Any: whatever the JSON holds
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        at = f"column {exc.colno}" if where.startswith("line") else f"line {exc.lineno}"
        raise ParseError(f"{where}: not valid JSON: {exc.msg} ({at})") from exc
    except RecursionError as exc:
        raise ParseError(f"{where}: JSON nested too deeply") from exc


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


def _record(obj: JsonObject, config: IngestionConfig) -> Record:
    reserved = {config.json_text_field, config.json_title_field, config.json_id_field}
    nested = obj.get(METADATA_FIELD)
    metadata = dict(nested) if isinstance(nested, dict) else {}
    metadata.update(
        (key, value)
        for key, value in obj.items()
        if key not in reserved and not (key == METADATA_FIELD and isinstance(value, dict))
    )
    return Record(
        data=json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode(),
        metadata=metadata,
        external_id=_external_id(obj.get(config.json_id_field)),
        title=_title(obj, config),
    )


def _external_id(ident: object) -> str | None:
    if ident is None or isinstance(ident, str):
        return ident
    return json.dumps(ident)  # 4983 -> "4983", true -> "true"


def _title(obj: JsonObject, config: IngestionConfig) -> str | None:
    title = obj.get(config.json_title_field)
    if not isinstance(title, str):
        return None
    return " ".join(normalise_text(title).split()) or None


def _kind(value: object) -> str:
    """The JSON name of a value's type, with its article."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"
