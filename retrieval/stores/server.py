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
from qdrant_client.http.exceptions import ApiException, UnexpectedResponse

from retrieval import filters as f
from retrieval.errors import StoreRequestError, StoreUnavailableError
from retrieval.stores.base import (
    TENANT_FIELD,
    TEXT_FIELD,
    CollectionSpec,
    Hit,
    Point,
    Scalar,
    SearchRequest,
    Where,
    check_collection_name,
    cosines,
    payload_indexes,
)

# What qdrant-client lets through: over REST, UnexpectedResponse for an HTTP status it does not
# expect (status_code says which), ResponseHandlingException for a transport failure or a
# response it cannot parse, ResourceExhaustedResponse for a 429; grpc.RpcError over gRPC (code()
# says which); raw httpx errors on some paths; in local mode ValueError (bad input, a missing
# collection) and RuntimeError (the client is closed).
_CLIENT_ERRORS: tuple[type[Exception], ...] = (
    ApiException,
    QdrantException,
    httpx.HTTPError,
    grpc.RpcError,
    OSError,
    RuntimeError,
    ValueError,
)
# 4xx statuses that are not the request's fault: credentials the server refuses (the store is
# unusable until an operator fixes them, like a database refusing its password) and "not now".
_UNAVAILABLE_4XX = frozenset({401, 403, 408, 429})
# The gRPC codes of a request the server refused (REST's 400, 404, 409, 412 and 416).
_GRPC_REFUSED = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
    }
)

_SCHEMA: dict[str, models.PayloadSchemaType] = {
    "keyword": models.PayloadSchemaType.KEYWORD,
    "integer": models.PayloadSchemaType.INTEGER,
    "float": models.PayloadSchemaType.FLOAT,
    "bool": models.PayloadSchemaType.BOOL,
    "datetime": models.PayloadSchemaType.DATETIME,
}


def _text_index(*, local: bool) -> models.TextIndexParams:
    """The BM25 text index of :data:`TEXT_FIELD`: English words, lowercased, stop words dropped,
    Snowball-stemmed, like the embedded store's.

    qdrant-client's local mode serves text queries only with default tokenization (no stop
    words, no stemmer); there, and only there, the index is the plain one.
    """
    if local:
        return models.TextIndexParams(
            type=models.TextIndexType.TEXT, tokenizer=models.TokenizerType.WORD, scoring=True
        )
    return models.TextIndexParams(
        type=models.TextIndexType.TEXT,
        tokenizer=models.TokenizerType.WORD,
        lowercase=True,
        stopwords=models.Language.ENGLISH,
        stemmer=models.SnowballParams(
            type=models.Snowball.SNOWBALL, language=models.SnowballLanguage.ENGLISH
        ),
        scoring=True,
    )


def _equals(key: str, kind: str | None, value: Scalar) -> models.FieldCondition:
    if kind == "datetime":
        return models.FieldCondition(
            key=key, range=models.DatetimeRange(gte=str(value), lte=str(value))
        )
    if isinstance(value, float) or kind == "float":
        # MatchValue takes no floats; a closed range of one point is float equality.
        point = float(value)
        return models.FieldCondition(key=key, range=models.Range(gte=point, lte=point))
    return models.FieldCondition(key=key, match=models.MatchValue(value=value))


def _translate(expr: f.Expr) -> models.Condition:
    """``expr`` as a Qdrant condition; see :mod:`retrieval.filters` for the semantics."""
    if isinstance(expr, f.And):
        return models.Filter(must=[_translate(e) for e in expr.items])
    if isinstance(expr, f.Or):
        return models.Filter(should=[_translate(e) for e in expr.items])
    if isinstance(expr, f.Not):
        return models.Filter(must_not=[_translate(expr.item)])
    if isinstance(expr, f.Exists):
        empty = models.IsEmptyCondition(is_empty=models.PayloadField(key=expr.key))
        return models.Filter(must_not=[empty]) if expr.present else empty
    if isinstance(expr, f.Eq):
        return _equals(expr.key, expr.kind, expr.value)
    if isinstance(expr, f.In):
        if expr.kind in ("keyword", "integer"):
            values = list(expr.values)
            return models.FieldCondition(key=expr.key, match=models.MatchAny(any=values))
        return models.Filter(should=[_equals(expr.key, expr.kind, v) for v in expr.values])
    bounds = {b: getattr(expr, b) for b in f.RANGE_BOUNDS}
    if expr.kind == "datetime":
        return models.FieldCondition(key=expr.key, range=models.DatetimeRange(**bounds))
    return models.FieldCondition(key=expr.key, range=models.Range(**bounds))


def _filter(where: Where, expr: f.Expr | None = None) -> models.Filter | None:
    conditions: list[models.Condition] = [_equals(k, None, v) for k, v in where.items()]
    if expr is not None:
        conditions.append(_translate(expr))
    return models.Filter(must=conditions) if conditions else None


def is_refusal(exc: Exception) -> bool:
    """Whether ``exc`` is the store refusing the request itself (see
    :class:`~retrieval.errors.StoreRequestError`), not failing to serve it."""
    if isinstance(exc, UnexpectedResponse):
        status = exc.status_code
        return status is not None and 400 <= status < 500 and status not in _UNAVAILABLE_4XX
    if isinstance(exc, grpc.RpcError):
        return exc.code() in _GRPC_REFUSED  # an RpcError is a grpc.Call too
    return isinstance(exc, ValueError)


@contextmanager
def _client_errors(action: str, name: str, *, refusals: bool = True) -> Iterator[None]:
    """Translate qdrant-client's errors: a refused request into :class:`StoreRequestError`
    (unless ``refusals`` is False: then every error is an outage), the rest into
    :class:`StoreUnavailableError`."""
    try:
        yield
    except _CLIENT_ERRORS as exc:
        if refusals and is_refusal(exc):
            status = exc.status_code if isinstance(exc, UnexpectedResponse) else None
            raise StoreRequestError(
                f"Qdrant refused to {action} {name!r}: {exc}", status_code=status
            ) from exc
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
            existing = self._client.get_collection(name).payload_schema
            if TEXT_FIELD not in existing:
                # Collections created before hybrid search gain the index here.
                self._client.create_payload_index(
                    name, TEXT_FIELD, field_schema=_text_index(local=self._local), wait=True
                )
            if self._local:
                return
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
            StoreRequestError: the collection does not exist, or Qdrant refused the points (a
                vector of the wrong dimension).
            StoreUnavailableError: Qdrant failed.
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

    def search(self, name: str, request: SearchRequest) -> list[Hit]:
        """The best points for ``request``, best first ([] if the collection is missing).

        Hybrid mode is one call: two prefetches (dense, BM25) fused by DBSF or weighted RRF.

        Raises:
            ValueError: invalid name.
            StoreRequestError: Qdrant refused the request (a vector of the wrong dimension).
            StoreUnavailableError: Qdrant failed.
        """
        check_collection_name(name)
        self._check_open()
        vector = [float(x) for x in request.vector]
        conditions = _filter(request.where, request.filter)
        lexical = models.TextQuery(text=request.text or "")
        query: models.Query | list[float]
        prefetch: list[models.Prefetch] | None = None
        using: str | None = None
        if request.mode == "hybrid":
            prefetch = [
                models.Prefetch(query=vector, filter=conditions, limit=request.candidates),
                models.Prefetch(
                    query=lexical, using=TEXT_FIELD, filter=conditions, limit=request.candidates
                ),
            ]
            weights = [request.dense_weight, request.lexical_weight]
            query = (
                models.FusionQuery(fusion=models.Fusion.DBSF)
                if request.fusion == "dbsf"
                else models.RrfQuery(rrf=models.Rrf(k=request.rrf_k, weights=weights))
            )
        elif request.mode == "lexical":
            query, using = lexical, TEXT_FIELD
        else:
            query = vector
        with _client_errors("search", name):
            # One extra round trip, but one code path: a missing collection is a 404 over REST,
            # a different status over gRPC and a ValueError in local mode.
            if not self._client.collection_exists(name):
                return []
            response = self._client.query_points(
                name,
                query=query,
                using=using,
                prefetch=prefetch,
                query_filter=conditions if prefetch is None else None,
                limit=request.limit,
                with_payload=True,
                with_vectors=request.mode != "dense",
            )
        points = response.points
        if request.mode == "dense":
            similarities = [p.score for p in points]
        else:
            similarities = cosines(vector, [p.vector for p in points])  # type: ignore[misc]
        return [
            Hit(id=str(p.id), score=p.score, payload=p.payload or {}, similarity=sim)
            for p, sim in zip(points, similarities, strict=True)
        ]

    def delete(self, name: str, *, where: Where) -> None:
        """Delete every point matching ``where`` (all of them if empty); applied on return.

        No error if the collection does not exist.

        Raises:
            ValueError: invalid name.
            StoreUnavailableError: Qdrant failed.
        """
        check_collection_name(name)
        self._check_open()
        selector = models.FilterSelector(filter=_filter(where) or models.Filter())
        with _client_errors("delete from", name):
            if self._client.collection_exists(name):
                self._client.delete(name, points_selector=selector, wait=True)

    def count(self, name: str, *, where: Where, filter: f.Expr | None = None) -> int:
        """Exact number of points matching ``where`` and ``filter`` (0 if the collection is
        missing).

        Raises:
            ValueError: invalid name.
            StoreUnavailableError: Qdrant failed.
        """
        check_collection_name(name)
        self._check_open()
        count_filter = _filter(where, filter)
        with _client_errors("count", name):
            if not self._client.collection_exists(name):
                return 0
            return self._client.count(name, count_filter=count_filter, exact=True).count

    def check_open(self) -> None:
        """Never refuses untried: this store has no breaker (see ``VectorStore.check_open``)."""

    def ping(self) -> None:
        """Raise :class:`StoreUnavailableError` unless Qdrant answers a collection listing.

        Any error is unavailability here, a refusal too (a URL that is no Qdrant answers 404):
        the store cannot serve calls.
        """
        self._check_open()
        with _client_errors("list", "collections", refusals=False):
            self._client.get_collections()

    def close(self) -> None:
        """Close the client; every later call raises :class:`StoreUnavailableError`."""
        if self._closed.is_set():
            return
        self._closed.set()
        with _client_errors("close", "client", refusals=False):
            self._client.close()

    def _check_open(self) -> None:
        if self._closed.is_set():
            raise StoreUnavailableError("the vector store is closed")
