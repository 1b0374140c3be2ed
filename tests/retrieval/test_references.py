"""The raw references of ``shoal eval`` (retrieval.references) on a shard Shoal's store wrote."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

from retrieval.references import dense_exact, hybrid_rrf, open_shard, read_chunks
from retrieval.stores import EdgeStore
from retrieval.stores.base import CollectionSpec, Point, SearchRequest

# document, vector, text: document "a" has two chunks.
CHUNKS = [
    ("a", [1.0, 0.0, 0.0], "tidal pools of the rocky coast at low water"),
    ("a", [0.0, 1.0, 0.0], "barnacles close their plates"),
    ("b", [0.9, 0.1, 0.0], "kelp forests grow fast"),
    ("c", [0.7, 0.7, 0.0], "sea urchins graze kelp"),
    ("d", [0.0, 0.0, 1.0], "tidal pools"),
]


@pytest.fixture
def shard_dir(tmp_path: Path) -> Path:
    """A collection written by the real store, then closed so the references may load it."""
    store = EdgeStore(tmp_path / "qdrant")
    store.ensure_collection("ns", CollectionSpec(dimension=3))
    points = [
        Point(str(uuid.uuid4()), vector, {"document_id": doc, "text": text, "tenant_id": "t"})
        for doc, vector, text in CHUNKS
    ]
    store.upsert("ns", points)
    store.close()
    return tmp_path / "qdrant" / "ns"


def test_read_chunks_scrolls_every_point_with_its_document(shard_dir: Path) -> None:
    with open_shard(shard_dir) as shard:
        chunks = read_chunks(shard, page=2)  # three pages
    assert sorted(chunks.document_ids) == ["a", "a", "b", "c", "d"]
    assert chunks.vectors.shape == (5, 3)
    assert np.allclose(np.linalg.norm(chunks.vectors, axis=1), 1.0)
    stored = {(d, tuple(np.round(np.array(v) / np.linalg.norm(v), 5))) for d, v, _ in CHUNKS}
    read = {
        (d, tuple(np.round(v, 5))) for d, v in zip(chunks.document_ids, chunks.vectors, strict=True)
    }
    assert read == stored


def test_dense_exact_ranks_documents_by_their_best_chunk(shard_dir: Path) -> None:
    with open_shard(shard_dir) as shard:
        chunks = read_chunks(shard)
    queries = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 2.0]])
    ranked = dense_exact(chunks, queries, depth=3)
    # "a" leads both of the first two through a different chunk each time.
    assert ranked[0] == ["a", "c", "b"]
    assert ranked[1] == ["a", "b", "c"]
    assert ranked[2][0] == "d"  # an unnormalised query is a cosine all the same
    assert all(len(r) == 3 for r in ranked)


def test_hybrid_rrf_fuses_the_dense_and_bm25_rankings(shard_dir: Path) -> None:
    with open_shard(shard_dir) as shard:
        ranked = hybrid_rrf(shard, [1.0, 0.0, 0.0], "tidal pools", limit=10)
    # Dense: a, b, c, d; BM25: only d and a match. RRF with k=60 sums 1/(60 + rank): a, high
    # on both, then d, which BM25 alone lifts above b and c.
    assert ranked == ["a", "d", "b", "c"]


def test_open_shard_needs_a_shard_and_its_only_handle(tmp_path: Path, shard_dir: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no Qdrant Edge shard"), open_shard(tmp_path):
        pass
    # Edge allows one handle per shard: while a store holds it, the references cannot load it,
    # which is why `shoal eval` closes its platform first.
    store = EdgeStore(shard_dir.parent)
    assert store.search("ns", SearchRequest([1.0, 0.0, 0.0], limit=1))  # opens the shard
    with pytest.raises(Exception, match="WouldBlock"), open_shard(shard_dir):
        pass
    store.close()
    with open_shard(shard_dir) as shard:
        assert len(read_chunks(shard).document_ids) == 5
