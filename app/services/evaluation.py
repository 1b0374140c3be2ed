"""Retrieval quality on a BEIR-format data set, through the real pipeline.

A BEIR folder holds ``corpus.jsonl`` (``_id``, ``title``, ``text``), ``queries.jsonl`` (``_id``,
``text``) and ``qrels/<split>.tsv`` (``query-id``, ``corpus-id``, ``score``, with a header).
:func:`ingest_corpus` uploads the corpus as one JSONL file into a namespace, exactly as a client
would, and waits for the workers; :func:`evaluate` asks every judged query through
:func:`app.services.query.retrieve`, the same search a user's query runs, and scores the
documents it returns (a document ranks where its best chunk ranks).

Metrics follow ``trec_eval``, which BEIR's published numbers come from: nDCG@k with linear
gains (the qrels score) and log2 discounts, recall@k over the judged-relevant documents, MRR@k
of the first relevant one. They are a dozen lines; no evaluation package is installed.
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
from app.services.documents import UploadItem
from app.services.query import retrieve

# Chunks asked for per query: documents have several, and recall@100 needs 100 documents.
_CHUNKS_PER_QUERY = 250
_UNFINISHED = (DocumentState.QUEUED, DocumentState.PARSING, DocumentState.EMBEDDING)


@dataclass(frozen=True)
class BeirData:
    corpus: Path
    queries: dict[str, str]  # query id → text, judged queries only
    qrels: dict[str, dict[str, int]]  # query id → corpus id → relevance (> 0)


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
    with queries_path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if str(record["_id"]) in qrels:
                    queries[str(record["_id"])] = str(record["text"])
            except (ValueError, KeyError) as exc:
                raise ValueError(f"{queries_path}:{number}: not a BEIR query") from exc
    missing = set(qrels) - set(queries)
    if missing:
        raise ValueError(f"{queries_path}: no text for judged queries {sorted(missing)[:5]}")
    return BeirData(corpus=corpus, queries=queries, qrels=qrels)


def ndcg_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    dcg = sum(relevant.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted(relevant.values(), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    return len(set(ranked[:k]) & set(relevant)) / len(relevant) if relevant else 0.0


def mrr_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    return next((1 / (i + 1) for i, d in enumerate(ranked[:k]) if d in relevant), 0.0)


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


def evaluate(
    platform: Platform,
    namespace: Namespace,
    data: BeirData,
    *,
    overrides: Mapping[str, Any] | None = None,
    on_query: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """Ask every judged query and score the ranking: nDCG@10, recall@100, MRR@10 (means)."""
    with platform.sessions() as session:
        rows = session.execute(
            select(Document.id, Document.external_id).where(Document.namespace_id == namespace.id)
        )
        corpus_ids = {doc_id: str(external) for doc_id, external in rows.all()}
    totals = {"ndcg@10": 0.0, "recall@100": 0.0, "mrr@10": 0.0}
    started = time.perf_counter()
    options = None
    for query_id, text in data.queries.items():
        with platform.sessions() as session:
            found = retrieve(
                session,
                platform.query,
                namespace,
                question=text,
                top_k=_CHUNKS_PER_QUERY,
                overrides=overrides,
            )
        options = found.options
        ranked = list(dict.fromkeys(corpus_ids[p.document_id] for p in found.passages))
        relevant = data.qrels[query_id]
        totals["ndcg@10"] += ndcg_at(ranked, relevant, 10)
        totals["recall@100"] += recall_at(ranked, relevant, 100)
        totals["mrr@10"] += mrr_at(ranked, relevant, 10)
        on_query()
    count = len(data.queries)
    report: dict[str, Any] = {k: round(v / count, 4) for k, v in totals.items()}
    report["queries"] = count
    report["query_ms_mean"] = round((time.perf_counter() - started) * 1000 / count, 1)
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
