"""The vector-store interface every engine adapter implements.

One collection per namespace, named by the caller from the namespace's internal id. Points carry
``tenant_id`` and ``namespace_id`` in their payload, and :func:`retrieval.search.search` always
filters on both, so a collection can never leak across tenants even if a name were reused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

# Payload values are JSON: this is a boundary type.
Payload = dict[str, Any]
Scalar = str | int | float | bool

# An equality filter: every key must equal its value. Issue 6 grows this into the filter language.
Where = Mapping[str, Scalar]

# Collection names become directory names under the embedded store's root, so the alphabet
# leaves no way out of it ("/", "." and ".." are impossible); both stores apply the same rule.
_COLLECTION_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def check_collection_name(name: str) -> str:
    """Return ``name`` if it is a valid collection name: 1-64 of ``A-Z a-z 0-9 _ -``.

    Raises:
        ValueError: the name is empty, too long or has another character. Names come from
            internal ids, so this is a bug in the caller, never a user error.
    """
    # fullmatch, not "^...$": "$" would also accept a trailing newline.
    if not _COLLECTION_NAME.fullmatch(name):
        raise ValueError(f"invalid collection name {name!r}")
    return name


@dataclass(frozen=True)
class CollectionSpec:
    """Shape of a collection: vector size and the payload fields to index.

    ``indexed_fields`` maps a payload key to one of ``keyword``, ``integer``, ``float``,
    ``bool``, ``datetime``. ``tenant_id``, ``namespace_id`` and ``document_id`` are always
    indexed as keywords.
    """

    dimension: int
    indexed_fields: Mapping[str, str] = field(default_factory=dict)


# The index types a CollectionSpec may name, and the fields every collection indexes.
FIELD_TYPES = frozenset({"keyword", "integer", "float", "bool", "datetime"})
TENANT_FIELD = "tenant_id"
_ALWAYS_INDEXED = {TENANT_FIELD: "keyword", "namespace_id": "keyword", "document_id": "keyword"}


def payload_indexes(spec: CollectionSpec) -> dict[str, str]:
    """Every payload index ``spec`` implies, field to type, the always-indexed fields first.

    The always-indexed fields keep their keyword type even if ``spec`` names them too; stores
    mark :data:`TENANT_FIELD` as the tenant key so the engine can lay data out per tenant.

    Raises:
        ValueError: ``spec`` names a type outside :data:`FIELD_TYPES`.
    """
    unknown = {f: t for f, t in spec.indexed_fields.items() if t not in FIELD_TYPES}
    if unknown:
        raise ValueError(f"unknown payload index types {unknown}; use one of {sorted(FIELD_TYPES)}")
    return {
        **_ALWAYS_INDEXED,
        **{f: t for f, t in spec.indexed_fields.items() if f not in _ALWAYS_INDEXED},
    }


@dataclass(frozen=True)
class Point:
    """One chunk's vector. ``id`` is a UUID string derived from document id and ordinal."""

    id: str
    vector: Sequence[float]
    payload: Payload


@dataclass(frozen=True)
class Hit:
    """A search result: the point id, its cosine similarity and its payload."""

    id: str
    score: float
    payload: Payload


class VectorStore(Protocol):
    """A vector engine holding one collection per namespace.

    Every method raises :class:`retrieval.errors.StoreUnavailableError` when the engine fails.
    Methods are safe to call from several threads at once.
    """

    def ensure_collection(self, name: str, spec: CollectionSpec) -> None:
        """Create the collection if absent (idempotent) with cosine distance and its indexes."""

    def drop_collection(self, name: str) -> None:
        """Delete the collection and everything in it; no error if it does not exist."""

    def upsert(self, name: str, points: Sequence[Point]) -> None:
        """Insert or overwrite points by id; durable when the call returns."""

    def search(self, name: str, vector: Sequence[float], *, where: Where, limit: int) -> list[Hit]:
        """Nearest points by cosine similarity among those matching ``where``, best first.

        A collection that does not exist yields no hits.
        """

    def delete(self, name: str, *, where: Where) -> None:
        """Delete every point matching ``where``; no error if the collection does not exist."""

    def count(self, name: str, *, where: Where) -> int:
        """Number of points matching ``where`` (0 when the collection does not exist)."""

    def ping(self) -> None:
        """Raise :class:`StoreUnavailableError` unless the store can serve calls (readiness)."""

    def close(self) -> None:
        """Release files and connections; the store is unusable afterwards."""
