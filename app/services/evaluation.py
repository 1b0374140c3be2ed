"""Retrieval quality on a BEIR-format data set, through the real pipeline.

A BEIR folder holds ``corpus.jsonl`` (``_id``, ``title``, ``text``), ``queries.jsonl`` (``_id``,
``text``) and ``qrels/<split>.tsv`` (``query-id``, ``corpus-id``, ``score``, with a header).
:func:`ingest_corpus` uploads the corpus as one JSONL file into a namespace, exactly as a client
would, and waits for the workers; :func:`evaluate` asks every judged query through
:func:`app.services.search.retrieve`, the same search a user's query runs, and scores the
documents it returns (a document ranks where its best chunk ranks).

Metrics follow ``trec_eval``, which BEIR's published numbers come from: nDCG@k with linear
gains (the qrels score) and log2 discounts, recall@k over the judged-relevant documents, MRR@k
of the first relevant one. They are a dozen lines; no evaluation package is installed.

Every figure is given on all queries and on the project's two fixed halves (:func:`half`):
defaults are chosen on the fitting half and reported on the other. :func:`references` scores,
on the same chunks, what the raw model and the raw engine rank without Shoal
(:mod:`retrieval.references`), so Shoal's figures are always read beside them.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from app.db.models import Document, DocumentState, Namespace
from app.platform import Platform
from app.services import documents, namespaces
from app.services.search import retrieve
from app.services.uploads import UploadItem
from app.settings import Settings
from ingestion.embedder import ChunkEmbedder
from retrieval import references as raw
from retrieval.stores import embedded_root

# Chunks asked for per query: documents have several, and recall@100 needs 100 documents.
_CHUNKS_PER_QUERY = 250
_UNFINISHED = (DocumentState.QUEUED, DocumentState.PARSING, DocumentState.EMBEDDING)
# The two halves of the queries (see half()): defaults are fitted on the first only.
HALVES = ("fit", "report")


@dataclass(frozen=True)
class BeirData:
    corpus: Path
    queries: dict[str, str]  # query id → text, judged queries only
    qrels: dict[str, dict[str, int]]  # query id → corpus id → relevance (> 0)
    positions: dict[str, int]  # query id → its record's place in queries.jsonl, from 0


def half(query_id: str, position: int) -> str:
    """The project's fixed split: ``"fit"`` for even query ids, ``"report"`` for odd ones; an id
    that is not an integer goes by the parity of its ``position`` in ``queries.jsonl``.

    Defaults (the fusion, the abstention gate) are chosen on the fitting half only, and the
    reporting half says how they do on queries nothing was chosen on.
    """
    return HALVES[(int(query_id) if query_id.isdigit() else position) % 2]


def load_beir(folder: Path, split: str = "test") -> BeirData:
    """Read a BEIR folder's queries and judgements (the corpus is read when uploaded).

    Raises:
        ValueError: a file is missing or malformed; the message names it.
    """
    corpus = folder / "corpus.jsonl"
    queries_path = folder / "queries.jsonl"
    qrels_path = folder / "qrels" / f"{split}.tsv"
    for path in (corpus, queries_path, qrels_path):
        if not path.is_file():
            raise ValueError(
                f"{path} not found: a BEIR folder has corpus.jsonl, queries.jsonl "
                f"and qrels/{split}.tsv"
            )
    qrels: dict[str, dict[str, int]] = {}
    with qrels_path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            try:
                score = int(row["score"])
                qrels.setdefault(row["query-id"], {})[row["corpus-id"]] = score
            except (KeyError, ValueError) as exc:
                raise ValueError(f"{qrels_path}: bad row {row}") from exc
    qrels = {q: {d: s for d, s in judged.items() if s > 0} for q, judged in qrels.items()}
    qrels = {q: judged for q, judged in qrels.items() if judged}
    queries: dict[str, str] = {}
    positions: dict[str, int] = {}
    with queries_path.open(encoding="utf-8") as handle:
        position = 0  # of the record among all of the file's records, judged or not
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if str(record["_id"]) in qrels:
                    queries[str(record["_id"])] = str(record["text"])
                    positions[str(record["_id"])] = position
            except (ValueError, KeyError) as exc:
                raise ValueError(f"{queries_path}:{number}: not a BEIR query") from exc
            position += 1
    missing = set(qrels) - set(queries)
    if missing:
        raise ValueError(f"{queries_path}: no text for judged queries {sorted(missing)[:5]}")
    return BeirData(corpus=corpus, queries=queries, qrels=qrels, positions=positions)


def ndcg_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    dcg = sum(relevant.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted(relevant.values(), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    return len(set(ranked[:k]) & set(relevant)) / len(relevant) if relevant else 0.0


def mrr_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    return next((1 / (i + 1) for i, d in enumerate(ranked[:k]) if d in relevant), 0.0)


_METRICS = (("ndcg@10", ndcg_at, 10), ("recall@100", recall_at, 100), ("mrr@10", mrr_at, 10))


def score(rankings: Mapping[str, Sequence[str]], data: BeirData) -> dict[str, Any]:
    """Mean nDCG@10, recall@100 and MRR@10 of ``rankings`` (query id → corpus ids, best first)
    over every judged query, with the same on each half under ``"halves"``."""

    def means(ids: Sequence[str]) -> dict[str, Any]:
        count = max(len(ids), 1)
        result: dict[str, Any] = {
            name: round(sum(metric(rankings.get(q, []), data.qrels[q], k) for q in ids) / count, 4)
            for name, metric, k in _METRICS
        }
        result["queries"] = len(ids)
        return result

    report = means(list(data.queries))
    report["halves"] = {
        name: means([q for q in data.queries if half(q, data.positions[q]) == name])
        for name in HALVES
    }
    return report


def scratch_namespace(platform: Platform, tenant_id: str, name: str) -> Namespace:
    """A new namespace with the server's defaults (model, search, routes), detached from its
    session so it can be handed to other sessions and threads."""
    with platform.sessions() as session:
        namespace = namespaces.create_namespace(
            session,
            tenant_id=tenant_id,
            name=name,
            embedding_model=platform.embedder.model_id,
            embedding_dimension=platform.embedder.dimension,
            indexed_fields={},
            routes={},
            store=platform.store,
        )
        session.expunge(namespace)
    return namespace


def ingest_corpus(
    platform: Platform,
    namespace: Namespace,
    corpus: Path,
    *,
    on_progress: Callable[[int, int], None] = lambda done, total: None,
    poll_s: float = 1.0,
) -> tuple[int, int]:
    """Upload ``corpus`` into ``namespace`` and wait until no document is unfinished.

    Returns (indexed, failed). ``on_progress(finished, total)`` is called at every poll.
    """
    with platform.sessions() as session:
        documents.upload(
            session,
            namespace=namespace,
            items=[UploadItem(data=corpus.read_bytes(), filename=corpus.name)],
            enqueue=platform.enqueue,
            ingestion=platform.settings.ingestion,
        )
    while True:
        counts = document_states(platform, namespace)
        total = sum(counts.values())
        unfinished = sum(counts.get(state, 0) for state in _UNFINISHED)
        on_progress(total - unfinished, total)
        if not unfinished:
            return counts.get(DocumentState.INDEXED, 0), counts.get(DocumentState.FAILED, 0)
        time.sleep(poll_s)


def document_states(platform: Platform, namespace: Namespace) -> dict[DocumentState, int]:
    with platform.sessions() as session:
        rows = session.execute(
            select(Document.state, func.count())
            .where(Document.namespace_id == namespace.id)
            .group_by(Document.state)
        )
        return dict(rows.all())


def corpus_ids(platform: Platform, namespace: Namespace) -> dict[str, str]:
    """Each document of ``namespace``: Shoal's id → its corpus id (the ``_id`` it was sent with)."""
    with platform.sessions() as session:
        rows = session.execute(
            select(Document.id, Document.external_id).where(Document.namespace_id == namespace.id)
        )
        return {doc_id: str(external) for doc_id, external in rows.all()}


def evaluate(
    platform: Platform,
    namespace: Namespace,
    data: BeirData,
    *,
    overrides: Mapping[str, Any] | None = None,
    on_query: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """Ask every judged query and score the ranking: nDCG@10, recall@100, MRR@10 (means), on
    all queries and on each half (:func:`score`)."""
    documents_of = corpus_ids(platform, namespace)
    rankings: dict[str, list[str]] = {}
    started = time.perf_counter()
    options = None
    for query_id, text in data.queries.items():
        with platform.sessions() as session:
            found = retrieve(
                session,
                platform.query.searcher,
                namespace,
                question=text,
                top_k=_CHUNKS_PER_QUERY,
                overrides=overrides,
            )
        options = found.options
        ranked = dict.fromkeys(documents_of[p.document_id] for p in found.passages)
        rankings[query_id] = list(ranked)
        on_query()
    elapsed_ms = (time.perf_counter() - started) * 1000
    report = score(rankings, data)
    report["query_ms_mean"] = round(elapsed_ms / max(len(data.queries), 1), 1)
    if options is not None:
        report["search"] = {
            "mode": options.mode,
            "fusion": options.fusion,
            "rrf_k": options.rrf_k,
            "dense_weight": options.dense_weight,
            "lexical_weight": options.lexical_weight,
            "candidates": options.candidates,
            "rerank": options.rerank,
        }
    return report


def references(
    settings: Settings,
    namespace: Namespace,
    data: BeirData,
    documents_of: Mapping[str, str],
    embedder: ChunkEmbedder,
) -> dict[str, Any]:
    """The raw references on the chunks Shoal indexed in ``namespace``, scored like
    :func:`evaluate` (a ``"method"`` says what each is):

    - ``dense_exact``: every stored chunk vector against the questions' vectors, exact cosine
      in numpy;
    - ``edge_hybrid_rrf``: one raw Qdrant Edge query per question on the namespace's shard,
      the same dense vector and the question's text as BM25, fused by RRF with k=60, as many
      chunks per signal and in all as :func:`evaluate` asks Shoal for.

    The questions' vectors are one batch through ``embedder``'s own ``encode``: the model the
    chunks were embedded with (the platform's bare embedder, which stays usable after the
    platform closes), with no cache and no query normalisation. ``documents_of`` maps Shoal's
    document ids to corpus ids (:func:`corpus_ids`). The shard is loaded here, so the platform
    that wrote it must be closed first (Edge allows one handle per shard). With a Qdrant server
    configured there is no shard to load: the answer is ``{"unavailable": why}`` and nothing is
    computed.

    Raises:
        FileNotFoundError: the namespace has no shard under the data directory.
    """
    if settings.qdrant_url is not None:
        return {
            "unavailable": "the raw references read the embedded Qdrant Edge shard; with a "
            "Qdrant server configured (SHOAL_QDRANT_URL) they are not computed"
        }
    ids = list(data.queries)
    texts = [data.queries[q] for q in ids]
    vectors = embedder.encode(texts)
    shard_dir = embedded_root(settings.data_dir) / namespace.collection
    with raw.open_shard(shard_dir) as shard:
        dense = raw.dense_exact(raw.read_chunks(shard), vectors, depth=100)
        fused = [
            raw.hybrid_rrf(shard, vector, text, limit=_CHUNKS_PER_QUERY)
            for vector, text in zip(vectors, texts, strict=True)
        ]

    def scored(ranked: list[list[str]]) -> dict[str, Any]:
        by_query = zip(ids, ranked, strict=True)
        return score({q: [documents_of[d] for d in r] for q, r in by_query}, data)

    return {
        "dense_exact": {
            "method": f"{embedder.model_id} encode, exact cosine over every chunk",
            **scored(dense),
        },
        "edge_hybrid_rrf": {
            "method": f"one Qdrant Edge query: dense + BM25 prefetches of "
            f"{_CHUNKS_PER_QUERY} chunks, RRF k={raw.RRF_K}",
            **scored(fused),
        },
    }
