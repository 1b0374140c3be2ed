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

import numpy as np

from retrieval.config import Fusion, SearchMode
from retrieval.filters import Expr

# Payload values are JSON: this is a boundary type.
Payload = dict[str, Any]
Scalar = str | int | float | bool

# Equalities every point must satisfy: the tenant, namespace and document scoping the services
# add to every call. Users' conditions travel separately, as a filters.Expr.
Where = Mapping[str, Scalar]

# The payload field holding a chunk's text; stores index it for BM25.
TEXT_FIELD = "text"

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
    indexed as keywords, and :data:`TEXT_FIELD` as full text with BM25 scoring.
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


def cosines(query: Sequence[float], vectors: Sequence[Sequence[float]]) -> list[float]:
    """Cosine similarity of ``query`` with each of ``vectors``, in one matrix product."""
    if not vectors:
        return []
    matrix = np.asarray(vectors, dtype=np.float64)
    u = np.asarray(query, dtype=np.float64)
    norms = np.linalg.norm(matrix, axis=1) * np.linalg.norm(u)
    products = matrix @ u
    return [float(p / n) if n else 0.0 for p, n in zip(products, norms, strict=True)]


@dataclass(frozen=True)
class Point:
    """One chunk's vector. ``id`` is a UUID string derived from document id and ordinal."""

    id: str
    vector: Sequence[float]
    payload: Payload


@dataclass(frozen=True)
class Hit:
    """A search result: the point id, its ranking score, its cosine similarity and its payload.

    ``score`` orders the results of one search and means what the mode makes it: the cosine
    (dense), a BM25 score (lexical), the fused score (hybrid: DBSF or RRF). ``similarity`` is
    always the cosine between the query vector and the point's, comparable across modes:
    abstention and citations use it.
    """

    id: str
    score: float
    payload: Payload
    similarity: float


@dataclass(frozen=True)
class SearchRequest:
    """One search of a collection.

    ``where`` and ``filter`` together restrict the candidates in every mode; ``text`` is what
    BM25 ranks by (required unless ``mode`` is dense). In hybrid mode each signal contributes
    its best ``candidates`` points and ``fusion`` orders their union: reciprocal rank fusion
    (``weight / (rrf_k + rank)``, ranks counted from 0, summed), or distribution-based score
    fusion (Qdrant's: each list's scores normalised by its mean and spread, summed; weights do
    not apply).
    """

    vector: Sequence[float]
    limit: int
    where: Where = field(default_factory=dict)
    filter: Expr | None = None
    text: str | None = None
    mode: SearchMode = "dense"
    candidates: int = 100
    rrf_k: int = 60
    dense_weight: float = 1.0
    lexical_weight: float = 1.0
    fusion: Fusion = "dbsf"  # retrieval.config.SearchOptions's default (a test holds them equal)

    def __post_init__(self) -> None:
        if self.candidates < 1:
            raise ValueError(f"candidates must be at least 1, got {self.candidates}")
        if self.mode != "dense" and not (self.text and self.text.strip()):
            raise ValueError(f"a {self.mode} search needs text")


class VectorStore(Protocol):
    """A vector engine holding one collection per namespace.

    Every method raises :class:`retrieval.errors.StoreUnavailableError` when the engine fails,
    and :class:`retrieval.errors.StoreRequestError` when it answers by refusing the request (a
    vector of the wrong dimension, an upsert into a missing collection): the two must never be
    confused, since only the first is an outage. Methods are safe to call from several threads
    at once.
    """

    def ensure_collection(self, name: str, spec: CollectionSpec) -> None:
        """Create the collection if absent (idempotent) with cosine distance and its indexes."""

    def drop_collection(self, name: str) -> None:
        """Delete the collection and everything in it; no error if it does not exist."""

    def upsert(self, name: str, points: Sequence[Point]) -> None:
        """Insert or overwrite points by id; durable when the call returns."""

    def search(self, name: str, request: SearchRequest) -> list[Hit]:
        """The ``request.limit`` best points matching its conditions, best first.

        A collection that does not exist yields no hits.
        """

    def delete(self, name: str, *, where: Where) -> None:
        """Delete every point matching ``where``; no error if the collection does not exist."""

    def count(self, name: str, *, where: Where, filter: Expr | None = None) -> int:
        """Number of points matching ``where`` and ``filter`` (0 if the collection is missing)."""

    def ping(self) -> None:
        """Raise :class:`StoreUnavailableError` unless the store can serve calls (readiness)."""

    def check_open(self) -> None:
        """Raise :class:`StoreUnavailableError` at once if calls would be refused untried (an
        open breaker, :class:`retrieval.resilience.GuardedStore`); a plain store never refuses,
        and wrappers delegate. Lets a query skip the work before a search that cannot happen."""

    def close(self) -> None:
        """Release files and connections; the store is unusable afterwards."""
