"""Search always stays inside the caller's tenant and namespace."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from retrieval.search import search
from retrieval.stores import CollectionSpec, EdgeStore, Point
from retrieval.stores.base import SearchRequest

COLLECTION = "ns_shared"
VECTOR = [1.0, 0.0, 0.0, 0.0]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EdgeStore]:
    """One collection that (wrongly) holds two tenants and two namespaces, same vectors."""
    opened = EdgeStore(tmp_path / "qdrant")
    opened.ensure_collection(COLLECTION, CollectionSpec(dimension=4))
    points = [
        Point(
            id=str(uuid.uuid4()),
            vector=VECTOR,
            payload={"tenant_id": tenant, "namespace_id": namespace, "document_id": "d"},
        )
        for tenant in ("tenant-a", "tenant-b")
        for namespace in ("ns-1", "ns-2")
        for _ in range(3)
    ]
    opened.upsert(COLLECTION, points)
    yield opened
    opened.close()


@pytest.mark.parametrize("tenant", ["tenant-a", "tenant-b"])
@pytest.mark.parametrize("namespace", ["ns-1", "ns-2"])
def test_search_returns_only_the_callers_tenant_and_namespace(
    store: EdgeStore, tenant: str, namespace: str
) -> None:
    hits = search(
        store,
        COLLECTION,
        SearchRequest(VECTOR, limit=100),
        tenant_id=tenant,
        namespace_id=namespace,
    )

    assert len(hits) == 3
    assert {(h.payload["tenant_id"], h.payload["namespace_id"]) for h in hits} == {
        (tenant, namespace)
    }


def test_an_unknown_tenant_finds_nothing(store: EdgeStore) -> None:
    hits = search(
        store,
        COLLECTION,
        SearchRequest(VECTOR, limit=10),
        tenant_id="tenant-c",
        namespace_id="ns-1",
    )
    assert hits == []


def test_limit_caps_the_hits(store: EdgeStore) -> None:
    hits = search(
        store, COLLECTION, SearchRequest(VECTOR, limit=2), tenant_id="tenant-a", namespace_id="ns-1"
    )
    assert len(hits) == 2


@pytest.mark.parametrize("limit", [0, -1, 301])
def test_a_limit_outside_1_to_300_is_rejected(store: EdgeStore, limit: int) -> None:
    with pytest.raises(ValueError, match="between 1 and 300"):
        search(
            store,
            COLLECTION,
            SearchRequest(VECTOR, limit=limit),
            tenant_id="tenant-a",
            namespace_id="ns-1",
        )
