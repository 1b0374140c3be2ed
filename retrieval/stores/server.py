"""The networked vector store: a Qdrant server through qdrant-client.

Used when several processes (API replicas, Celery workers) share one index. The same class runs
on qdrant-client's local mode (``QdrantClient(":memory:")`` or ``path=``), which is how the
contract suite checks it against :class:`~retrieval.stores.edge.EdgeStore` without a server.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import grpc  # type: ignore[import-untyped]  # grpcio ships no types (types-grpcio absent)
import httpx
from qdrant_client import QdrantClient, models
from qdrant_client.common.client_exceptions import QdrantException
from qdrant_client.http.exceptions import ApiException

from retrieval.errors import StoreUnavailableError
from retrieval.stores.base import (
    TENANT_FIELD,
    CollectionSpec,
    Hit,
    Point,
    Scalar,
    Where,
    check_collection_name,
    payload_indexes,
)

# What qdrant-client lets through: its own errors over REST (ApiException covers HTTP status
# errors and transport failures it wraps), raw httpx/gRPC errors on some paths, and in local
# mode ValueError (bad input, missing collection) and RuntimeError (the client is closed).
_CLIENT_ERRORS: tuple[type[Exception], ...] = (
    ApiException,
    QdrantException,
    httpx.HTTPError,
    grpc.RpcError,
    OSError,
    RuntimeError,
    ValueError,
)

_SCHEMA: dict[str, models.PayloadSchemaType] = {
    "keyword": models.PayloadSchemaType.KEYWORD,
    "integer": models.PayloadSchemaType.INTEGER,
    "float": models.PayloadSchemaType.FLOAT,
    "bool": models.PayloadSchemaType.BOOL,
    "datetime": models.PayloadSchemaType.DATETIME,
}


def _condition(key: str, value: Scalar) -> models.FieldCondition:
    if isinstance(value, float):
        # MatchValue takes no floats; a closed range of one point is float equality.
        return models.FieldCondition(key=key, range=models.Range(gte=value, lte=value))
    return models.FieldCondition(key=key, match=models.MatchValue(value=value))


def _filter(where: Where) -> models.Filter:
    return models.Filter(must=[_condition(key, value) for key, value in where.items()])


@contextmanager
def _client_errors(action: str, name: str) -> Iterator[None]:
    try:
        yield
    except _CLIENT_ERRORS as exc:
        raise StoreUnavailableError(f"Qdrant failed to {action} {name!r}: {exc}") from exc


class ServerStore:
    """A :class:`~retrieval.stores.base.VectorStore` on a Qdrant server or qdrant-client local mode.

    The store owns ``client`` and closes it in :meth:`close`. Timeouts are the client's
    (:func:`retrieval.stores.make_store` sets them from the config). Local mode is a test
    double: on disk it is SQLite, which refuses calls from threads other than the creating one
    unless the client is built with ``force_disable_check_same_thread=True``.
    """

    def __init__(self, client: QdrantClient) -> None:
        self._client = client
        # Local mode keeps payload indexes nowhere and warns on each create_payload_index,
        # and pytest turns warnings into errors: there we skip creating them.
        options = client.init_options
        self._local = options.get("location") == ":memory:" or options.get("path") is not None
        self._closed = threading.Event()

    def ensure_collection(self, name: str, spec: CollectionSpec) -> None:
        """Create the collection if absent (idempotent), with cosine distance and its indexes.

        Safe when two processes race to create it: the loser finds it created.

        Raises:
            ValueError: invalid name, or ``spec`` names an unknown index type.
            StoreUnavailableError: Qdrant failed.
        """
        check_collection_name(name)
        indexes = payload_indexes(spec)
        vectors = models.VectorParams(size=spec.dimension, distance=models.Distance.COSINE)
        self._check_open()
        with _client_errors("create", name):
            if not self._client.collection_exists(name):
                try:
                    self._client.create_collection(name, vectors_config=vectors)
                except _CLIENT_ERRORS:
                    if not self._client.collection_exists(name):
                        raise
            if self._local:
                return
            existing = self._client.get_collection(name).payload_schema
            for field, field_type in indexes.items():
                if field in existing:
                    continue
                schema: models.PayloadSchemaType | models.KeywordIndexParams = _SCHEMA[field_type]
                if field == TENANT_FIELD:
                    # Lets the server co-locate each tenant's points on disk.
                    schema = models.KeywordIndexParams(
                        type=models.KeywordIndexType.KEYWORD, is_tenant=True
                    )
                self._client.create_payload_index(name, field, field_schema=schema, wait=True)

    def drop_collection(self, name: str) -> None:
        """Delete the collection; no error if it does not exist.

        Raises:
            ValueError: invalid name.
            StoreUnavailableError: Qdrant failed.
        """
        check_collection_name(name)
        self._check_open()
        with _client_errors("drop", name):
            if self._client.collection_exists(name):
                self._client.delete_collection(name)

    def upsert(self, name: str, points: Sequence[Point]) -> None:
        """Insert or overwrite ``points`` by id; applied (``wait=True``) before returning.

        Raises:
            ValueError: invalid name.
            StoreUnavailableError: the collection does not exist, or Qdrant failed (including a
                vector of the wrong dimension).
        """
        check_collection_name(name)
        self._check_open()
        if not points:
            return
        structs = [
            models.PointStruct(id=p.id, vector=[float(x) for x in p.vector], payload=p.payload)
            for p in points
        ]
        with _client_errors("upsert into", name):
            self._client.upsert(name, points=structs, wait=True)

    def search(self, name: str, vector: Sequence[float], *, where: Where, limit: int) -> list[Hit]:
        """Nearest points by cosine among those matching ``where``, best first ([] if missing).

        Raises:
            ValueError: invalid name.
            StoreUnavailableError: Qdrant failed.
        """
        check_collection_name(name)
        self._check_open()
        query_filter = _filter(where) if where else None
        with _client_errors("search", name):
            # One extra round trip, but one code path: a missing collection is a 404 over REST,
            # a different status over gRPC and a ValueError in local mode.
            if not self._client.collection_exists(name):
                return []
            response = self._client.query_points(
                name,
                query=[float(x) for x in vector],
                query_filter=query_filter,
                limit=limit,
                with_payload=True,
            )
        return [Hit(id=str(p.id), score=p.score, payload=p.payload or {}) for p in response.points]

    def delete(self, name: str, *, where: Where) -> None:
        """Delete every point matching ``where`` (all of them if empty); applied on return.

        No error if the collection does not exist.

        Raises:
            ValueError: invalid name.
            StoreUnavailableError: Qdrant failed.
        """
        check_collection_name(name)
        self._check_open()
        selector = models.FilterSelector(filter=_filter(where))
        with _client_errors("delete from", name):
            if self._client.collection_exists(name):
                self._client.delete(name, points_selector=selector, wait=True)

    def count(self, name: str, *, where: Where) -> int:
        """Exact number of points matching ``where`` (0 when the collection does not exist).

        Raises:
            ValueError: invalid name.
            StoreUnavailableError: Qdrant failed.
        """
        check_collection_name(name)
        self._check_open()
        count_filter = _filter(where) if where else None
        with _client_errors("count", name):
            if not self._client.collection_exists(name):
                return 0
            return self._client.count(name, count_filter=count_filter, exact=True).count

    def ping(self) -> None:
        """Raise :class:`StoreUnavailableError` unless Qdrant answers a collection listing."""
        self._check_open()
        with _client_errors("list", "collections"):
            self._client.get_collections()

    def close(self) -> None:
        """Close the client; every later call raises :class:`StoreUnavailableError`."""
        if self._closed.is_set():
            return
        self._closed.set()
        with _client_errors("close", "client"):
            self._client.close()

    def _check_open(self) -> None:
        if self._closed.is_set():
            raise StoreUnavailableError("the vector store is closed")
