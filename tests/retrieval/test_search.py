"""Search: the store's always stays inside the caller's tenant and namespace, and a question's
keeps only the documents the visibility callable shows."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingestion.embedder import SentenceTransformerEmbedder
from retrieval.cache import MemoryCache
from retrieval.config import SearchOptions
from retrieval.errors import QuestionTooLongError
from retrieval.search import SEARCH_ATTEMPTS, Query, Searcher, search, search_points
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
    hits = search_points(
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
    hits = search_points(
        store,
        COLLECTION,
        SearchRequest(VECTOR, limit=10),
        tenant_id="tenant-c",
        namespace_id="ns-1",
    )
    assert hits == []


def test_limit_caps_the_hits(store: EdgeStore) -> None:
    hits = search_points(
        store, COLLECTION, SearchRequest(VECTOR, limit=2), tenant_id="tenant-a", namespace_id="ns-1"
    )
    assert len(hits) == 2


@pytest.mark.parametrize("limit", [0, -1, 301])
def test_a_limit_outside_1_to_300_is_rejected(store: EdgeStore, limit: int) -> None:
    with pytest.raises(ValueError, match="between 1 and 300"):
        search_points(
            store,
            COLLECTION,
            SearchRequest(VECTOR, limit=limit),
            tenant_id="tenant-a",
            namespace_id="ns-1",
        )


FACTS = [f"Fact {n}: sea otters hold hands while they sleep, observation {n}." for n in range(12)]


@pytest.fixture
def facts(tmp_path: Path, embedder: SentenceTransformerEmbedder) -> Iterator[Searcher]:
    """Twelve near-identical chunks of tenant-a's ns-1, one document each (d0 … d11)."""
    opened = EdgeStore(tmp_path / "facts")
    opened.ensure_collection("ns_facts", CollectionSpec(dimension=embedder.dimension))
    vectors = embedder.encode(FACTS)
    opened.upsert(
        "ns_facts",
        [
            Point(
                id=str(uuid.uuid4()),
                vector=vector.tolist(),
                payload={
                    "tenant_id": "tenant-a",
                    "namespace_id": "ns-1",
                    "document_id": f"d{n}",
                    "text": text,
                },
            )
            for n, (text, vector) in enumerate(zip(FACTS, vectors, strict=True))
        ],
    )
    yield Searcher(opened, embedder, MemoryCache(max_entries=100))
    opened.close()


def ask(top_k: int, **options: object) -> Query:
    return Query(
        question="Do sea otters hold hands?",
        top_k=top_k,
        tenant_id="tenant-a",
        namespace_id="ns-1",
        collection="ns_facts",
        overrides=options,
    )


@pytest.mark.slow
def test_search_keeps_only_what_the_visibility_callable_shows(facts: Searcher) -> None:
    everything = search(facts, ask(3), lambda ids: ids)
    hidden = {p.document_id for p in everything.passages}
    asked: list[set[str]] = []

    def visible(ids: set[str]) -> set[str]:
        asked.append(set(ids))
        return ids - hidden

    found = search(facts, ask(3), visible)

    assert len(found.passages) == 3, "over-fetching makes up for the hidden documents"
    assert not {p.document_id for p in found.passages} & hidden
    # Hits were dropped, so it searched again, at most SEARCH_ATTEMPTS times, always asking.
    assert len(asked) == SEARCH_ATTEMPTS
    assert all(hidden <= ids for ids in asked)
    assert found.options == SearchOptions()  # no namespace or request options: the defaults
    assert found.cache_hit  # the first search embedded the question in tenant-a's entry


@pytest.mark.slow
def test_search_stops_asking_once_nothing_is_hidden(facts: Searcher) -> None:
    asked: list[set[str]] = []

    def visible(ids: set[str]) -> set[str]:
        asked.append(set(ids))
        return ids

    found = search(facts, ask(2, mode="dense"), visible)

    assert len(asked) == 1
    assert len(found.passages) == 2
    assert found.options.mode == "dense"  # the request's override


@pytest.mark.slow
def test_a_question_longer_than_the_model_reads_is_refused(facts: Searcher) -> None:
    long = dataclasses.replace(ask(2), question="otters " * 600)
    with pytest.raises(QuestionTooLongError, match="tokens") as raised:
        search(facts, long, lambda ids: ids)
    assert raised.value.field == "question"
