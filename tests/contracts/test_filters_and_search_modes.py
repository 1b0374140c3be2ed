"""Metadata filters and search modes, on every VectorStore implementation.

The property test holds each engine to :func:`retrieval.filters.matches`, the plain-Python
statement of the filter language: on random documents and random filters, the points a store
returns are exactly those the reference accepts.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retrieval.config import SearchMode
from retrieval.filters import Expr, format_datetime, matches, parse_filter
from retrieval.stores import CollectionSpec, Point, VectorStore
from retrieval.stores.base import SearchRequest
from tests.contracts.test_vector_store import ENGINES

DIM = 4
FIELDS = {
    "kind": "keyword",
    "tags": "keyword",
    "year": "integer",
    "score": "float",
    "open": "bool",
    "published": "datetime",
}
SPEC = CollectionSpec(dimension=DIM, indexed_fields={f"metadata.{k}": v for k, v in FIELDS.items()})
_names = itertools.count()

KEYWORDS = st.sampled_from(["trial", "review", "case"])
INTEGERS = st.integers(-3, 3)
FLOATS = st.sampled_from([-1.5, 0.0, 0.25, 1.0, 2.75])
INSTANTS = st.datetimes(min_value=dt.datetime(2020, 1, 1), max_value=dt.datetime(2020, 1, 4)).map(
    lambda d: d.replace(microsecond=0, second=0, tzinfo=dt.UTC)
)

# Values a document may hold per field (absent and null are drawn separately): the declared
# type, since uploads refuse others, and for "tags" a list of keywords as well.
VALUES: dict[str, st.SearchStrategy[Any]] = {
    "kind": KEYWORDS,
    "tags": st.lists(KEYWORDS, max_size=3) | KEYWORDS,
    "year": INTEGERS,
    "score": FLOATS,
    "open": st.booleans(),
    "published": INSTANTS.map(format_datetime),
}


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """The reference: plain Python, independent of the adapters' numpy."""
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norms = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norms if norms else 0.0


def bound(field: str) -> st.SearchStrategy[Any]:
    """A filter value for ``field``; datetimes in several RFC 3339 spellings."""
    if field == "published":
        return INSTANTS.flatmap(
            lambda d: st.sampled_from(
                [
                    d.isoformat(),
                    d.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    d.astimezone(dt.timezone(dt.timedelta(hours=2))).isoformat(),
                ]
            )
        )
    if field == "tags":
        return KEYWORDS
    if field == "score":
        return FLOATS | st.integers(-2, 3)
    return VALUES[field]


@st.composite
def leaves(draw: st.DrawFn) -> dict[str, Any]:
    field = draw(st.sampled_from(sorted(FIELDS)))
    ops = ["eq", "in", "exists"]
    if FIELDS[field] in ("integer", "float", "datetime"):
        ops.append("range")
    op = draw(st.sampled_from(ops))
    if op == "eq":
        return {"field": field, "eq": draw(bound(field))}
    if op == "in":
        return {"field": field, "in": draw(st.lists(bound(field), min_size=1, max_size=3))}
    if op == "exists":
        return {"field": field, "exists": draw(st.booleans())}
    names = draw(
        st.lists(st.sampled_from(["gt", "gte", "lt", "lte"]), min_size=1, max_size=2, unique=True)
    )
    return {"field": field, "range": {n: draw(bound(field)) for n in names}}


FILTERS = st.recursive(
    leaves(),
    lambda inner: (
        st.builds(lambda xs: {"and": xs}, st.lists(inner, min_size=1, max_size=3))
        | st.builds(lambda xs: {"or": xs}, st.lists(inner, min_size=1, max_size=3))
        | st.builds(lambda x: {"not": x}, inner)
    ),
    max_leaves=6,
)


@st.composite
def metadata(draw: st.DrawFn) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for field in sorted(FIELDS):
        presence = draw(st.sampled_from(["value", "value", "absent", "null"]))
        if presence == "value":
            meta[field] = draw(VALUES[field])
        elif presence == "null":
            meta[field] = None
    return meta


@pytest.fixture(params=list(ENGINES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    opened = ENGINES[request.param](tmp_path).open()
    yield opened
    opened.close()


def fill(store: VectorStore, docs: list[dict[str, Any]], texts: list[str] | None = None) -> str:
    """A fresh collection holding one point per document; returns its name."""
    name = f"ns_prop{next(_names)}"
    store.ensure_collection(name, SPEC)
    vectors = np.random.default_rng(len(docs)).normal(size=(len(docs), DIM))
    store.upsert(
        name,
        [
            Point(
                id=str(uuid.UUID(int=i + 1)),
                vector=[float(x) for x in vectors[i]],
                payload={
                    "tenant_id": "t",
                    "namespace_id": "n",
                    "document_id": f"d{i}",
                    "text": texts[i] if texts else f"document {i}",
                    "metadata": meta,
                },
            )
            for i, meta in enumerate(docs)
        ],
    )
    return name


def found(store: VectorStore, name: str, expr: Expr, mode: str = "dense") -> set[str]:
    request = SearchRequest(
        [1.0] * DIM,
        limit=100,
        where={"tenant_id": "t"},
        filter=expr,
        text="document" if mode != "dense" else None,
        mode=mode,  # type: ignore[arg-type]
    )
    return {h.payload["document_id"] for h in store.search(name, request)}


@pytest.mark.slow  # 60 examples, each a fresh collection searched three ways: 13-165 s per store
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(docs=st.lists(metadata(), min_size=1, max_size=12), raw=FILTERS)
def test_a_store_returns_exactly_the_documents_the_filter_accepts(
    store: VectorStore, docs: list[dict[str, Any]], raw: dict[str, Any]
) -> None:
    expr = parse_filter(raw, FIELDS, key_prefix="metadata.")
    name = fill(store, docs)
    try:
        expected = {f"d{i}" for i, meta in enumerate(docs) if matches(expr, {"metadata": meta})}

        assert found(store, name, expr) == expected, raw
        assert store.count(name, where={"tenant_id": "t"}, filter=expr) == len(expected)
    finally:
        store.drop_collection(name)


DOCS = [
    {"kind": "trial", "year": 2019, "published": "2019-05-01T00:00:00.000000Z"},
    {"kind": "review", "year": 2020, "tags": ["x", "y"]},
    {"kind": "trial", "year": 2021, "open": True},
    {"kind": "case", "score": 0.5},
]
TEXTS = [
    "Vitamin D supplementation in a randomised trial of older adults.",
    "A review of statins and muscle pain.",
    "Aspirin after surgery: a randomised trial.",
    "A case of vitamin C toxicity.",
]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"field": "kind", "eq": "trial"}, {"d0", "d2"}),
        ({"field": "kind", "in": ["case", "review"]}, {"d1", "d3"}),
        ({"field": "year", "range": {"gte": 2020}}, {"d1", "d2"}),
        ({"field": "year", "range": {"gt": 2019, "lt": 2021}}, {"d1"}),
        ({"field": "year", "range": {"gte": 2019.5, "lte": 2020.5}}, {"d1"}),  # fractional
        ({"field": "published", "range": {"lt": "2019-06-01"}}, {"d0"}),
        ({"field": "tags", "eq": "y"}, {"d1"}),
        ({"field": "open", "eq": True}, {"d2"}),
        ({"field": "score", "eq": 0.5}, {"d3"}),
        ({"field": "score", "exists": False}, {"d0", "d1", "d2"}),
        ({"not": {"field": "kind", "eq": "trial"}}, {"d1", "d3"}),
        (
            {"or": [{"field": "kind", "eq": "case"}, {"field": "year", "range": {"lte": 2019}}]},
            {"d0", "d3"},
        ),
    ],
)
@pytest.mark.parametrize("mode", ["dense", "lexical", "hybrid"])
def test_each_operator_restricts_every_search_mode(
    store: VectorStore, raw: dict[str, Any], expected: set[str], mode: str
) -> None:
    fields = {**FIELDS, "tags": "keyword"}
    name = fill(store, DOCS, texts=[f"document {t}" for t in TEXTS])
    expr = parse_filter(raw, fields, key_prefix="metadata.")

    assert found(store, name, expr, mode) == expected


def test_lexical_search_ranks_by_the_words_and_reports_the_cosine(store: VectorStore) -> None:
    name = fill(store, [{}] * len(TEXTS), texts=TEXTS)
    request = SearchRequest(
        [0.5, 0.5, 0.5, 0.5], limit=10, text="randomised vitamin D trial", mode="lexical"
    )

    hits = store.search(name, request)

    # Only documents sharing a word score; the one sharing the most ranks first.
    assert [h.payload["document_id"] for h in hits][:1] == ["d0"]
    assert {h.payload["document_id"] for h in hits} <= {"d0", "d2", "d3"}
    assert "d1" not in {h.payload["document_id"] for h in hits}
    vectors = np.random.default_rng(len(TEXTS)).normal(size=(len(TEXTS), DIM))
    for hit in hits:
        index = int(hit.payload["document_id"][1:])
        assert hit.similarity == pytest.approx(cosine(request.vector, list(vectors[index])))


def test_hybrid_search_is_rrf_of_the_two_rankings(store: VectorStore) -> None:
    name = fill(store, [{}] * len(TEXTS), texts=TEXTS)
    vectors = np.random.default_rng(len(TEXTS)).normal(size=(len(TEXTS), DIM))
    query = [float(x) for x in vectors[1]]
    text = "randomised vitamin trial"
    dense = store.search(name, SearchRequest(query, limit=10))
    lexical = store.search(name, SearchRequest(query, limit=10, text=text, mode="lexical"))
    request = SearchRequest(query, limit=10, text=text, mode="hybrid", fusion="rrf", rrf_k=2)

    hybrid = store.search(name, request)

    fused: dict[str, float] = {}
    for ranking in (dense, lexical):
        for rank, hit in enumerate(ranking):
            fused[hit.id] = fused.get(hit.id, 0.0) + 1 / (request.rrf_k + rank)
    assert {h.id for h in hybrid} == set(fused)
    for hit in hybrid:
        assert hit.score == pytest.approx(fused[hit.id], rel=1e-5)
        index = int(hit.payload["document_id"][1:])
        assert hit.similarity == pytest.approx(cosine(query, list(vectors[index])))
    assert [h.score for h in hybrid] == sorted((h.score for h in hybrid), reverse=True)


@pytest.mark.parametrize(("dense_weight", "lexical_weight"), [(1.0, 0.0), (0.0, 1.0)])
def test_a_zero_weight_silences_its_signal(
    store: VectorStore, dense_weight: float, lexical_weight: float
) -> None:
    name = fill(store, [{}] * len(TEXTS), texts=TEXTS)
    query = [float(x) for x in np.random.default_rng(len(TEXTS)).normal(size=(len(TEXTS), DIM))[1]]
    text = "randomised vitamin trial"
    mode: SearchMode = "dense" if dense_weight else "lexical"
    alone = store.search(name, SearchRequest(query, limit=10, text=text, mode=mode))
    request = SearchRequest(
        query,
        limit=10,
        text=text,
        mode="hybrid",
        fusion="rrf",
        dense_weight=dense_weight,
        lexical_weight=lexical_weight,
    )

    hybrid = [h for h in store.search(name, request) if h.score > 0]

    assert [h.id for h in hybrid] == [h.id for h in alone]


def test_distribution_based_fusion_ranks_the_union_of_both_lists(store: VectorStore) -> None:
    name = fill(store, [{}] * len(TEXTS), texts=TEXTS)
    vectors = np.random.default_rng(len(TEXTS)).normal(size=(len(TEXTS), DIM))
    query = [float(x) for x in vectors[1]]
    text = "randomised vitamin trial"
    dense = store.search(name, SearchRequest(query, limit=10))
    lexical = store.search(name, SearchRequest(query, limit=10, text=text, mode="lexical"))

    hybrid = store.search(
        name, SearchRequest(query, limit=10, text=text, mode="hybrid", fusion="dbsf")
    )

    assert {h.id for h in hybrid} == {h.id for h in dense} | {h.id for h in lexical}
    assert [h.score for h in hybrid] == sorted((h.score for h in hybrid), reverse=True)
    # d2 is second in both lists, d1 first in the dense one only: agreement wins.
    ranked = [h.payload["document_id"] for h in hybrid]
    assert ranked.index("d2") < ranked.index("d1")


def test_a_search_without_text_cannot_be_lexical() -> None:
    with pytest.raises(ValueError, match="needs text"):
        SearchRequest([1.0] * DIM, limit=1, mode="hybrid")
