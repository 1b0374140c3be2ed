"""Raw references for retrieval quality: what a hand-written script would rank on the same shard.

``shoal eval`` scores Shoal's search beside two references computed on the very chunks it
indexed, with none of Shoal's search code in between (no store adapter, no filters, no cache):

- :func:`dense_exact`: every chunk vector, read raw from the shard, against the question's
  vector by exact cosine in numpy;
- :func:`hybrid_rrf`: one raw Qdrant Edge query per question, a dense prefetch and a BM25
  prefetch fused by reciprocal rank fusion with its textbook ``k=60``.

Both rank documents, each where its best chunk ranks. Reciprocal rank fusion gives many chunks
exactly the same score (a chunk 3rd by cosine and 5th by BM25 ties with one 5th and 3rd), and
Edge orders ties differently in each process: on SciFact the RRF reference moves by up to about
0.006 nDCG@10 from run to run (bench/RESULTS.md), while the dense reference and score fusion
(DBSF) repeat to the digit.

:func:`open_shard` loads the shard directory itself; Edge allows one open handle per shard, so
whoever holds it (an :class:`~retrieval.stores.edge.EdgeStore`) must be closed first.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import qdrant_edge as edge

from retrieval.stores.base import TEXT_FIELD

# The payload field naming the document a chunk belongs to.
DOCUMENT_FIELD = "document_id"
# The k of reciprocal rank fusion in the reference: the value of the paper that introduced it
# (Cormack, Clarke and Büttcher, 2009) and the engines' default; never tuned.
RRF_K = 60
# Questions per matrix product in dense_exact: memory is this many floats per chunk.
_QUERY_BLOCK = 256


@dataclass(frozen=True)
class Chunks:
    """Every point of a shard: its document (row order) and its unit-length vector."""

    document_ids: list[str]
    vectors: npt.NDArray[np.float64]  # (chunks, dimension)


@contextmanager
def open_shard(path: Path) -> Iterator[edge.EdgeShard]:
    """The Edge shard in directory ``path``, closed on exit.

    Raises:
        FileNotFoundError: ``path`` holds no shard.
        Exception: Edge failed to load it (another handle holds it: ``WouldBlock``).
    """
    if not (path / "edge_config.json").is_file():
        raise FileNotFoundError(f"{path} holds no Qdrant Edge shard")
    shard = edge.EdgeShard.load(str(path))
    try:
        yield shard
    finally:
        shard.close()


def read_chunks(shard: edge.EdgeShard, *, page: int = 1024) -> Chunks:
    """Every point of ``shard`` with its vector and document, scrolled raw."""
    document_ids: list[str] = []
    rows: list[Any] = []  # Any: Edge's Vector union; these are the unnamed dense vectors
    offset = None
    while True:
        records, offset = shard.scroll(
            edge.ScrollRequest(
                offset=offset, limit=page, with_payload=[DOCUMENT_FIELD], with_vector=True
            )
        )
        for record in records:
            document_ids.append(str((record.payload or {})[DOCUMENT_FIELD]))
            rows.append(record.vector)
        if offset is None:
            break
    vectors = np.asarray(rows, dtype=np.float64).reshape(len(rows), -1)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return Chunks(document_ids, vectors / np.maximum(norms, 1e-12))


def dense_exact(
    chunks: Chunks, queries: npt.NDArray[np.floating[Any]], *, depth: int
) -> list[list[str]]:
    """For each query vector (a row of ``queries``), the ``depth`` best documents by the exact
    cosine of their best chunk, best first."""
    if not chunks.document_ids:
        return [[] for _ in range(len(queries))]
    # Chunks grouped by document, so one reduceat takes each document's best chunk.
    order = np.argsort(np.asarray(chunks.document_ids), kind="stable")
    grouped = [chunks.document_ids[i] for i in order]
    starts = [i for i, d in enumerate(grouped) if i == 0 or d != grouped[i - 1]]
    documents = [grouped[i] for i in starts]
    vectors = chunks.vectors[order]
    unit = np.asarray(queries, dtype=np.float64)
    unit = unit / np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
    ranked: list[list[str]] = []
    for block in range(0, len(unit), _QUERY_BLOCK):
        cosines = unit[block : block + _QUERY_BLOCK] @ vectors.T
        best = np.maximum.reduceat(cosines, starts, axis=1)
        for row in best:
            top = np.argsort(-row, kind="stable")[:depth]
            ranked.append([documents[i] for i in top])
    return ranked


def hybrid_rrf(
    shard: edge.EdgeShard,
    vector: Sequence[float],
    text: str,
    *,
    limit: int,
    k: int = RRF_K,
) -> list[str]:
    """Documents ranked by one raw Edge hybrid query: the ``limit`` nearest chunks and the
    ``limit`` best BM25 chunks, fused by RRF with ``k``, best chunk first."""
    fusion: Any = edge.Fusion.Rrf(k=k)  # Any: the stub omits Fusion's nested classes
    hits = shard.query(
        edge.QueryRequest(
            prefetches=[
                edge.Prefetch(limit=limit, query=edge.Query.Nearest([float(x) for x in vector])),
                edge.Prefetch(limit=limit, query=edge.TextQuery(TEXT_FIELD, text)),
            ],
            query=fusion,
            limit=limit,
            with_payload=[DOCUMENT_FIELD],
        )
    )
    return list(dict.fromkeys(str((hit.payload or {})[DOCUMENT_FIELD]) for hit in hits))
