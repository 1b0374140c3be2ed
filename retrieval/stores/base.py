"""The vector-store interface every engine adapter implements.

One collection per namespace, named by the caller from the namespace's internal id. Points carry
``tenant_id`` and ``namespace_id`` in their payload, and :func:`retrieval.search.search` always
filters on both, so a collection can never leak across tenants even if a name were reused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

# Payload values are JSON: this is a boundary type.
Payload = dict[str, Any]
Scalar = str | int | float | bool

# An equality filter: every key must equal its value. Issue 6 grows this into the filter language.
Where = Mapping[str, Scalar]


@dataclass(frozen=True)
class CollectionSpec:
    """Shape of a collection: vector size and the payload fields to index.

    ``indexed_fields`` maps a payload key to one of ``keyword``, ``integer``, ``float``,
    ``bool``, ``datetime``. ``tenant_id``, ``namespace_id`` and ``document_id`` are always
    indexed as keywords.
    """

    dimension: int
    indexed_fields: Mapping[str, str] = field(default_factory=dict)


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
