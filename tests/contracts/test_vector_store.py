"""The VectorStore contract, run on every implementation: embedded Edge and qdrant-client.

The server store runs on qdrant-client's local mode (on disk and in memory), which executes the
same client calls as against a Qdrant server, so one suite keeps both adapters congruent.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from qdrant_client import QdrantClient

from retrieval.errors import StoreRequestError, StoreUnavailableError
from retrieval.stores import CollectionSpec, EdgeStore, Point, ServerStore, VectorStore
from retrieval.stores.base import Scalar, SearchRequest

DIM = 8
SPEC = CollectionSpec(dimension=DIM, indexed_fields={"metadata.year": "integer"})
COLLECTION = "ns_0123456789abcdef"


@dataclass(frozen=True)
class Engine:
    """How to open (and reopen) one implementation at one location."""

    open: Callable[[], VectorStore]


def _edge(tmp_path: Path) -> Engine:
    return Engine(open=lambda: EdgeStore(tmp_path / "qdrant"))


def _server_on_disk(tmp_path: Path) -> Engine:
    return Engine(open=lambda: ServerStore(QdrantClient(path=str(tmp_path / "local"))))


def _server_in_memory(tmp_path: Path) -> Engine:
    return Engine(open=lambda: ServerStore(QdrantClient(location=":memory:")))


ENGINES = {"edge": _edge, "server-on-disk": _server_on_disk, "server-in-memory": _server_in_memory}
PERSISTENT = ("edge", "server-on-disk")


@pytest.fixture(params=list(ENGINES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    opened = ENGINES[request.param](tmp_path).open()
    yield opened
    opened.close()


@pytest.fixture(params=PERSISTENT)
def persistent_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Engine:
    return ENGINES[request.param](tmp_path)


def unit_vectors(count: int, seed: int = 0) -> npt.NDArray[np.float64]:
    vectors = np.random.default_rng(seed).normal(size=(count, DIM))
    unit: npt.NDArray[np.float64] = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return unit


def point_id(document_id: str, ordinal: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{document_id}/{ordinal}"))


def make_points(
    vectors: npt.NDArray[np.float64],
    *,
    tenant: str = "t1",
    namespace: str = "n1",
    document: str = "d1",
) -> list[Point]:
    return [
        Point(
            id=point_id(f"{tenant}/{namespace}/{document}", i),
            vector=[float(x) for x in v],
            payload={
                "tenant_id": tenant,
                "namespace_id": namespace,
                "document_id": document,
                "ordinal": i,
                "text": f"chunk {i} of {document}",
            },
        )
        for i, v in enumerate(vectors)
    ]


def test_ensure_collection_is_idempotent(store: VectorStore) -> None:
    store.ensure_collection(COLLECTION, SPEC)
    store.upsert(COLLECTION, make_points(unit_vectors(3)))
    store.ensure_collection(COLLECTION, SPEC)
    assert store.count(COLLECTION, where={}) == 3


def test_search_returns_the_nearest_first_with_payload(store: VectorStore) -> None:
    vectors = unit_vectors(20)
    points = make_points(vectors)
    store.ensure_collection(COLLECTION, SPEC)
    store.upsert(COLLECTION, points)
    query = vectors[7] + 0.05 * unit_vectors(1, seed=1)[0]

    hits = store.search(COLLECTION, SearchRequest([float(x) for x in query], where={}, limit=5))

    expected = np.argsort(-(vectors @ (query / np.linalg.norm(query))))[:5]
    assert [h.id for h in hits] == [points[i].id for i in expected]
    assert hits[0].id == points[7].id
    assert hits[0].payload == points[7].payload
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert 0.9 < hits[0].score <= 1.0 + 1e-6


def test_limit_caps_the_number_of_hits(store: VectorStore) -> None:
    store.ensure_collection(COLLECTION, SPEC)
    store.upsert(COLLECTION, make_points(unit_vectors(10)))
    assert len(store.search(COLLECTION, SearchRequest([1.0] * DIM, where={}, limit=3))) == 3


def test_upserting_an_existing_id_overwrites_it(store: VectorStore) -> None:
    vectors = unit_vectors(4)
    points = make_points(vectors)
    store.ensure_collection(COLLECTION, SPEC)
    store.upsert(COLLECTION, points)
    replaced = Point(
        id=points[0].id, vector=points[3].vector, payload={**points[0].payload, "v": 2}
    )

    store.upsert(COLLECTION, [replaced])

    assert store.count(COLLECTION, where={}) == 4
    [hit] = store.search(COLLECTION, SearchRequest(replaced.vector, where={"v": 2}, limit=10))
    assert hit.id == points[0].id
    assert hit.score == pytest.approx(1.0, abs=1e-5)


def test_a_tenant_filter_never_returns_another_tenants_points(store: VectorStore) -> None:
    vectors = unit_vectors(6)
    store.ensure_collection(COLLECTION, SPEC)
    # Identical vectors for both tenants: only the filter can keep them apart.
    store.upsert(COLLECTION, make_points(vectors, tenant="tenant-a"))
    store.upsert(COLLECTION, make_points(vectors, tenant="tenant-b"))

    for query in vectors:
        hits = store.search(
            COLLECTION, SearchRequest(list(query), where={"tenant_id": "tenant-a"}, limit=12)
        )
        assert len(hits) == 6
        assert {h.payload["tenant_id"] for h in hits} == {"tenant-a"}
    assert store.count(COLLECTION, where={"tenant_id": "tenant-b"}) == 6


def test_where_combines_conditions_with_and(store: VectorStore) -> None:
    store.ensure_collection(COLLECTION, SPEC)
    store.upsert(COLLECTION, make_points(unit_vectors(3), namespace="n1", document="d1"))
    store.upsert(COLLECTION, make_points(unit_vectors(3, 2), namespace="n2", document="d1"))
    store.upsert(COLLECTION, make_points(unit_vectors(3, 3), namespace="n1", document="d2"))

    where = {"tenant_id": "t1", "namespace_id": "n1", "document_id": "d1"}
    hits = store.search(COLLECTION, SearchRequest([1.0] * DIM, where=where, limit=10))

    assert len(hits) == 3
    assert {(h.payload["namespace_id"], h.payload["document_id"]) for h in hits} == {("n1", "d1")}


@pytest.mark.parametrize(
    ("field", "value", "other"),
    [
        ("flag", True, False),
        ("flag", False, True),
        ("year", 2012, 2013),
        ("ratio", 0.25, 0.5),
        ("lang", "en", "de"),
    ],
)
def test_where_matches_every_scalar_type(
    store: VectorStore, field: str, value: Scalar, other: Scalar
) -> None:
    points = [
        Point(id=point_id("d", i), vector=list(v), payload={"tenant_id": "t1", field: x})
        for i, (v, x) in enumerate(zip(unit_vectors(4), [value, other, value, other], strict=True))
    ]
    store.ensure_collection(COLLECTION, SPEC)
    store.upsert(COLLECTION, points)

    hits = store.search(COLLECTION, SearchRequest([1.0] * DIM, where={field: value}, limit=10))

    assert sorted(h.id for h in hits) == sorted([points[0].id, points[2].id])
    assert store.count(COLLECTION, where={field: value}) == 2


def test_delete_by_document_removes_exactly_its_points(store: VectorStore) -> None:
    store.ensure_collection(COLLECTION, SPEC)
    store.upsert(COLLECTION, make_points(unit_vectors(5), document="keep"))
    store.upsert(COLLECTION, make_points(unit_vectors(4, 1), document="drop"))
    store.upsert(COLLECTION, make_points(unit_vectors(2, 2), tenant="t2", document="drop"))

    store.delete(COLLECTION, where={"tenant_id": "t1", "document_id": "drop"})

    assert store.count(COLLECTION, where={"document_id": "keep"}) == 5
    assert store.count(COLLECTION, where={"tenant_id": "t1", "document_id": "drop"}) == 0
    assert store.count(COLLECTION, where={"tenant_id": "t2", "document_id": "drop"}) == 2
    assert store.count(COLLECTION, where={}) == 7


def test_count_counts_matching_points(store: VectorStore) -> None:
    store.ensure_collection(COLLECTION, SPEC)
    assert store.count(COLLECTION, where={}) == 0
    store.upsert(COLLECTION, make_points(unit_vectors(5), document="a"))
    store.upsert(COLLECTION, make_points(unit_vectors(3, 1), document="b"))
    assert store.count(COLLECTION, where={}) == 8
    assert store.count(COLLECTION, where={"document_id": "b"}) == 3
    assert store.count(COLLECTION, where={"document_id": "missing"}) == 0


def test_an_empty_upsert_changes_nothing(store: VectorStore) -> None:
    store.ensure_collection(COLLECTION, SPEC)
    store.upsert(COLLECTION, [])
    assert store.count(COLLECTION, where={}) == 0


def test_drop_collection_removes_everything(store: VectorStore) -> None:
    store.ensure_collection(COLLECTION, SPEC)
    store.upsert(COLLECTION, make_points(unit_vectors(5)))

    store.drop_collection(COLLECTION)

    assert store.search(COLLECTION, SearchRequest([1.0] * DIM, where={}, limit=5)) == []
    assert store.count(COLLECTION, where={}) == 0
    store.ensure_collection(COLLECTION, SPEC)
    assert store.count(COLLECTION, where={}) == 0


def test_a_missing_collection_reads_as_empty(store: VectorStore) -> None:
    assert (
        store.search("never_created", SearchRequest([1.0] * DIM, where={"tenant_id": "t"}, limit=5))
        == []
    )
    assert store.count("never_created", where={}) == 0
    store.delete("never_created", where={"document_id": "d"})
    store.drop_collection("never_created")
    assert store.search("never_created", SearchRequest([1.0] * DIM, where={}, limit=5)) == []


def test_upsert_into_a_missing_collection_is_a_refused_request(store: VectorStore) -> None:
    # The engine answered (Qdrant's 404): a refusal, never an outage.
    with pytest.raises(StoreRequestError):
        store.upsert("never_created", make_points(unit_vectors(1)))


def test_a_vector_of_the_wrong_dimension_is_a_refused_request(store: VectorStore) -> None:
    # Each engine says so its own way: Edge in its message, qdrant-client's local mode with a
    # ValueError, a Qdrant server with a 400; all are the store refusing, not failing.
    store.ensure_collection(COLLECTION, SPEC)
    store.upsert(COLLECTION, make_points(unit_vectors(3)))
    wrong_dimension = Point(id=point_id("d", 0), vector=[1.0] * (DIM + 1), payload={})
    with pytest.raises(StoreRequestError) as refused_upsert:
        store.upsert(COLLECTION, [wrong_dimension])
    with pytest.raises(StoreRequestError) as refused_search:
        store.search(COLLECTION, SearchRequest([1.0] * (DIM + 1), where={}, limit=3))
    for caught in (refused_upsert, refused_search):
        assert not isinstance(caught.value, StoreUnavailableError)
        assert caught.value.__cause__ is not None  # the engine's error is chained, not lost
    assert store.count(COLLECTION, where={}) == 3  # nothing written, and the store still serves


def test_an_unknown_index_type_is_rejected(store: VectorStore) -> None:
    with pytest.raises(ValueError, match="unknown payload index types"):
        store.ensure_collection(
            COLLECTION, CollectionSpec(dimension=DIM, indexed_fields={"x": "geo"})
        )


def test_ping_passes_on_a_working_store(store: VectorStore) -> None:
    store.ping()


CALLS: dict[str, Callable[[VectorStore, str], object]] = {
    "ensure_collection": lambda s, name: s.ensure_collection(name, SPEC),
    "drop_collection": lambda s, name: s.drop_collection(name),
    "upsert": lambda s, name: s.upsert(name, make_points(unit_vectors(1))),
    "search": lambda s, name: s.search(name, SearchRequest([1.0] * DIM, where={}, limit=1)),
    "delete": lambda s, name: s.delete(name, where={"document_id": "d"}),
    "count": lambda s, name: s.count(name, where={}),
}


@pytest.mark.parametrize("call", list(CALLS))
def test_a_closed_store_is_unavailable(store: VectorStore, call: str) -> None:
    store.ensure_collection(COLLECTION, SPEC)
    store.close()
    with pytest.raises(StoreUnavailableError):
        CALLS[call](store, COLLECTION)
    with pytest.raises(StoreUnavailableError):
        store.ping()


@pytest.mark.parametrize(
    "name", ["", ".", "..", "../escape", "a/b", "a\\b", "a b", "ns\n", "é", "x" * 65, "/etc"]
)
def test_invalid_collection_names_are_rejected_by_every_method(
    store: VectorStore, name: str
) -> None:
    for call in CALLS.values():
        with pytest.raises(ValueError, match="invalid collection name"):
            call(store, name)


def test_the_longest_valid_name_works(store: VectorStore) -> None:
    name = "A-z_9" + "x" * 59
    store.ensure_collection(name, SPEC)
    store.upsert(name, make_points(unit_vectors(2)))
    assert store.count(name, where={}) == 2


def test_data_survives_close_and_a_new_store_on_the_same_location(
    persistent_engine: Engine,
) -> None:
    vectors = unit_vectors(10)
    points = make_points(vectors)
    first = persistent_engine.open()
    first.ensure_collection(COLLECTION, SPEC)
    first.upsert(COLLECTION, points)
    first.delete(COLLECTION, where={"ordinal": 9})
    first.close()

    second = persistent_engine.open()
    try:
        assert second.count(COLLECTION, where={}) == 9
        hits = second.search(
            COLLECTION, SearchRequest(list(vectors[4]), where={"tenant_id": "t1"}, limit=1)
        )
        assert [(h.id, h.payload) for h in hits] == [(points[4].id, points[4].payload)]
        second.ensure_collection(COLLECTION, SPEC)  # reopening an existing collection
        assert second.count(COLLECTION, where={}) == 9
    finally:
        second.close()
