"""An upload's items: what the HTTP layer received, each with its media type, a file of
records split into one item per record, and metadata checked against the namespace's declared
fields, all before :func:`app.services.documents.upload` writes anything."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from app.errors import InvalidRequestError
from ingestion.config import IngestionConfig
from ingestion.errors import DocumentTooLargeError, ParseError
from ingestion.parsers import (
    JSON,
    RECORD_MEDIA_TYPES,
    Record,
    detect_media_type,
    split_upload,
)
from retrieval.filters import normalise_metadata_value

# Deepest metadata nesting accepted. Metadata rides in every chunk's payload, and Qdrant reads
# a payload nested past 128 levels as an error: one such document made every search of its
# namespace fail. Filters reach top-level keys only; 32 leaves room for any real record.
MAX_METADATA_DEPTH = 32


@dataclass(frozen=True)
class UploadItem:
    """One file of an upload, as the HTTP layer received it."""

    data: bytes
    filename: str | None = None
    declared_type: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    external_id: str | None = None


def typed_items(
    items: Sequence[UploadItem], ingestion: IngestionConfig, *, records: bool
) -> list[tuple[UploadItem, str]]:
    """Each item with its media type, a file of records (:func:`split_upload` says which,
    ``records`` asks for them) replaced by one item per record.

    A record's item is that record alone (``application/json``), named
    ``<filename>#<external id or position>``; the upload's metadata wins over the record's own,
    and its external id as :func:`_record_external_id` says.
    """
    typed: list[tuple[UploadItem, str]] = []
    for item in items:
        media_type = detect_media_type(
            item.data, filename=item.filename, declared=item.declared_type
        )
        if media_type not in RECORD_MEDIA_TYPES:
            typed.append((item, media_type))
            continue
        name = item.filename or "upload"
        try:
            split = split_upload(
                item.data, media_type=media_type, config=ingestion, records=records
            )
        except ParseError as exc:
            raise ParseError(f"{name}: {exc}") from exc
        except DocumentTooLargeError as exc:
            raise DocumentTooLargeError(f"{name}: {exc}") from exc
        if split is None:  # one document, its JSON flattened at indexing
            typed.append((item, media_type))
            continue
        typed.extend(
            (
                UploadItem(
                    data=record.data,
                    filename=f"{name}#{record.external_id or position}",
                    declared_type=JSON,
                    metadata={**record.metadata, **item.metadata},
                    external_id=_record_external_id(item, record, position, len(split)),
                ),
                JSON,
            )
            for position, record in enumerate(split, start=1)
        )
    return typed


def checked_metadata(
    typed: list[tuple[UploadItem, str]], fields: dict[str, str]
) -> list[tuple[UploadItem, str]]:
    """``typed`` with each document's declared metadata fields checked and normalised.

    Filters compare a field's values by its declared type (:mod:`retrieval.filters`); a value
    of another type would silently never match, so it refuses the upload instead.

    Raises:
        InvalidRequestError: a declared field holds a value of another type, or metadata is
            nested deeper than :data:`MAX_METADATA_DEPTH`; ``field`` is
            ``documents[i].metadata(.<name>)``, ``i`` counting documents (records included).
    """
    for position, (item, _) in enumerate(typed):
        if _depth(item.metadata) > MAX_METADATA_DEPTH:
            where = f"documents[{position}].metadata"
            raise InvalidRequestError(
                f"{where}: nested deeper than {MAX_METADATA_DEPTH} levels", field=where
            )
    if not fields:
        return typed
    checked = []
    for position, (item, media_type) in enumerate(typed):
        metadata = dict(item.metadata)
        for name, kind in fields.items():
            if name not in metadata:
                continue
            try:
                metadata[name] = normalise_metadata_value(metadata[name], kind)
            except ValueError as exc:
                where = f"documents[{position}].metadata.{name}"
                source = f" ({item.filename})" if item.filename else ""
                raise InvalidRequestError(f"{where}{source}: {exc}", field=where) from exc
        checked.append((dataclasses.replace(item, metadata=metadata), media_type))
    return checked


def _depth(value: object) -> int:
    """How deeply JSON ``value`` nests (a scalar: 0, ``{}``: 1), without recursion."""
    deepest = 0
    stack = [(value, 0)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, level + 1)
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, level + 1) for child in children)
    return deepest


def _record_external_id(item: UploadItem, record: Record, position: int, count: int) -> str | None:
    """The upload's external id names a file of one record; in a file of several, each record's
    own id does (else the upload's id and the position), so that records never share an id."""
    if count == 1:
        return item.external_id or record.external_id
    if record.external_id is not None or item.external_id is None:
        return record.external_id
    return f"{item.external_id}#{position}"
