"""Shoal's store requests in Qdrant Edge's terms, and Edge's errors in Shoal's.

Payload and BM25 text indexes, metadata filters (:mod:`retrieval.filters`), fusion of the dense
and lexical rankings, and :func:`engine_errors`, which tells a request Edge refused from a
failure: what :class:`retrieval.stores.edge.EdgeStore` hands to Edge and gets back.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import qdrant_edge as edge

from retrieval import filters as f
from retrieval.errors import StoreRequestError, StoreUnavailableError
from retrieval.stores.base import TENANT_FIELD, Scalar, SearchRequest, Where

# How Edge's messages (Qdrant's OperationError, the only detail it gives) begin when the request
# was at fault: the variants the Qdrant server answers 400 rather than 500. The tests pin
# the ones Shoal can cause (a vector of the wrong dimension, BM25 without a text index).
_REFUSALS = (
    "Vector dimension error",
    "Not existing vector name",
    "No point with id",
    "Payload type does not match",
    "Unable to infer type",
    "Validation failed",
    "Wrong input",
    "Wrong usage of",
    "No range index",
    "No appropriate index",
)


def index_params(field: str, field_type: str) -> edge.PayloadSchemaParams:
    if field_type == "keyword":
        return edge.KeywordIndexParams(is_tenant=True if field == TENANT_FIELD else None)
    if field_type == "integer":
        return edge.IntegerIndexParams(lookup=True, range=True)
    if field_type == "float":
        return edge.FloatIndexParams()
    if field_type == "bool":
        return edge.BoolIndexParams()
    return edge.DatetimeIndexParams()  # payload_indexes admits no other type


def text_index() -> edge.TextIndexParams:
    # English word tokens, lowercased, stop words dropped, Snowball-stemmed; BM25 scoring.
    return edge.TextIndexParams(
        tokenizer=edge.TokenizerType.Word,
        lowercase=True,
        stopwords=edge.Language.English,
        stemmer=edge.SnowballParams(edge.SnowballLanguage.English),
        scoring=True,
    )


def _match(value: str | int | bool) -> edge.MatchValue:
    if isinstance(value, bool):
        # Edge 0.9 reads MatchValue(True) as the integer 1 (its Rust side tries str, then int,
        # then bool, and Python's bool is an int), which never equals a stored boolean.
        # numpy.bool_ is not an int, so it reaches the bool variant; the stub does not list it.
        # The contract suite's boolean filter test pins this.
        return edge.MatchValue(np.bool_(value))  # type: ignore[arg-type]
    return edge.MatchValue(value)


def _equals(key: str, kind: str | None, value: Scalar) -> edge.FieldCondition:
    if kind == "datetime":
        return edge.FieldCondition(
            key=key, range=edge.RangeDateTime(gte=str(value), lte=str(value))
        )
    if isinstance(value, float) or kind == "float":
        # MatchValue takes no floats; a closed range of one point is float equality.
        point = float(value)
        return edge.FieldCondition(key=key, range=edge.RangeFloat(gte=point, lte=point))
    return edge.FieldCondition(key=key, match=_match(value))


def _translate(expr: f.Expr) -> edge.ConditionType:
    """``expr`` as an Edge condition; see :mod:`retrieval.filters` for the semantics."""
    if isinstance(expr, f.And):
        return edge.Filter(must=[_translate(e) for e in expr.items])
    if isinstance(expr, f.Or):
        return edge.Filter(should=[_translate(e) for e in expr.items])
    if isinstance(expr, f.Not):
        return edge.Filter(must_not=[_translate(expr.item)])
    if isinstance(expr, f.Exists):
        empty = edge.IsEmptyCondition(key=expr.key)
        return edge.Filter(must_not=[empty]) if expr.present else empty
    if isinstance(expr, f.Eq):
        return _equals(expr.key, expr.kind, expr.value)
    if isinstance(expr, f.In):
        if expr.kind in ("keyword", "integer"):
            return edge.FieldCondition(key=expr.key, match=edge.MatchAny(list(expr.values)))  # type: ignore[arg-type]
        return edge.Filter(should=[_equals(expr.key, expr.kind, v) for v in expr.values])
    if expr.kind == "datetime":
        bounds = {b: getattr(expr, b) for b in f.RANGE_BOUNDS}
        return edge.FieldCondition(key=expr.key, range=edge.RangeDateTime(**bounds))
    bounds = {b: getattr(expr, b) for b in f.RANGE_BOUNDS}
    return edge.FieldCondition(key=expr.key, range=edge.RangeFloat(**bounds))


def to_filter(where: Where, expr: f.Expr | None = None) -> edge.Filter | None:
    conditions: list[edge.ConditionType] = [
        _equals(key, None, value) for key, value in where.items()
    ]
    if expr is not None:
        conditions.append(_translate(expr))
    return edge.Filter(must=conditions) if conditions else None


def to_fusion(request: SearchRequest) -> edge.Fusion:
    if request.fusion == "dbsf":
        return edge.Fusion.Dbsf()  # type: ignore[return-value]  # the stub omits nested classes
    weights = [request.dense_weight, request.lexical_weight]
    return edge.Fusion.Rrf(k=request.rrf_k, weights=weights)  # type: ignore[return-value]


@contextmanager
def engine_errors(action: str, name: str) -> Iterator[None]:
    """Translate Edge's errors: a refused request (its message says so, or an argument Python
    could not convert) into :class:`StoreRequestError`, the rest into
    :class:`StoreUnavailableError`."""
    try:
        yield
    except Exception as exc:  # Edge's only exception types are Exception and TypeError
        if isinstance(exc, TypeError | ValueError) or str(exc).startswith(_REFUSALS):
            raise StoreRequestError(f"Qdrant Edge refused to {action} {name!r}: {exc}") from exc
        raise StoreUnavailableError(f"Qdrant Edge failed to {action} {name!r}: {exc}") from exc
