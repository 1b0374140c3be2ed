"""Ingestion throughput: Shoal's whole pipeline against the raw model on the same chunks.

    python -m bench.ingest [--limit N] [--batch-sizes 4,8,10,16,32,64] [--concurrency C]

Pipeline: the embedded platform (SQLite, Qdrant Edge on disk, in-process runner, default
settings) takes the SciFact corpus as one JSONL upload, one document per record, and the clock
runs from the upload call until every document is ``indexed``: splitting, hashing, the
database, parsing, chunking, embedding and upserts included.

Baseline: ``SentenceTransformer.encode`` of exactly the chunks the pipeline embeds, loaded the
way a user would load it (fp16 on CUDA), at the batch size that is fastest on this machine:
swept on a sample first, in this run. So ``baseline seconds / pipeline seconds`` says how close
the whole pipeline comes to the model alone (1.0: the pipeline costs nothing on top).
"""

from __future__ import annotations

import argparse
import os
import platform as host
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch
from sentence_transformers import SentenceTransformer
from sqlalchemy import func, select

from app.db.migrate import upgrade
from app.db.models import Document, DocumentState
from app.logging import configure_logging
from app.platform import Platform, build_platform
from app.services import documents, namespaces, tenants
from app.services.documents import UploadItem
from app.services.indexing import prepare_chunks
from app.settings import Settings
from ingestion.embedder import resolve_model_path
from ingestion.parsers import JSON, JSONL, split_records
from workers.inprocess import InProcessQueue

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact" / "corpus.jsonl"
SWEEP_SAMPLE = 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--limit", type=int, default=None, help="the first N records only")
    parser.add_argument("--batch-sizes", default="4,8,10,16,32,64")
    parser.add_argument(
        "--concurrency", type=int, default=None, help="indexing threads (default: the setting)"
    )
    args = parser.parse_args()

    lines = [line for line in args.corpus.read_bytes().splitlines() if line.strip()]
    corpus = b"\n".join(lines[: args.limit]) + b"\n"
    with tempfile.TemporaryDirectory(prefix="shoal-bench-") as tmp:
        settings = Settings(data_dir=Path(tmp))
        if args.concurrency:
            settings.workers.concurrency = args.concurrency
        configure_logging("WARNING")  # one line per document would time the terminal
        upgrade(settings.resolved_database_url)
        platform = build_platform(settings)
        try:
            platform.embedder.warm_up()
            texts = pipeline_chunks(platform, corpus)
            model = raw_model(settings)
            sizes = [int(s) for s in args.batch_sizes.split(",")]
            sweep = [
                (size, len(texts[:SWEEP_SAMPLE]) / time_encode(model, texts[:SWEEP_SAMPLE], size))
                for size in sizes
            ]
            best = max(sweep, key=lambda rate: rate[1])[0]
            print(f"# {len(texts)} chunks; sweep {sweep}", file=sys.stderr)
            baseline_s = time_encode(model, texts, best)
            print(f"# baseline at batch {best}: {baseline_s:.1f} s", file=sys.stderr)
            del model
            count, pipeline_s = time_pipeline(platform, corpus)
        finally:
            platform.close()

    print(f"machine: {describe_machine()}")
    print(
        f"indexing threads: {settings.workers.concurrency}, "
        f"model batch: {platform.embedder.batch_size}, "
        f"pipeline batch: {settings.embedding.pipeline_batch}"
    )
    rows = [
        ("documents", f"{count}"),
        ("chunks", f"{len(texts)}"),
        ("raw encode batch sweep (chunks/s)", ", ".join(f"{b}: {r:.0f}" for b, r in sweep)),
        (f"baseline: raw encode at batch {best}", f"{baseline_s:.1f} s"),
        ("pipeline: upload → all indexed", f"{pipeline_s:.1f} s"),
        ("pipeline documents/s", f"{count / pipeline_s:.1f}"),
        ("pipeline chunks/s", f"{len(texts) / pipeline_s:.1f}"),
        ("ratio (baseline s / pipeline s)", f"{baseline_s / pipeline_s:.3f}"),
    ]
    print("| measure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


def describe_machine() -> str:
    device = f"CUDA {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "CPU"
    return (
        f"{host.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), {device}, Python {sys.version.split()[0]}"
    )


def pipeline_chunks(platform: Platform, corpus: bytes) -> list[str]:
    """The chunk texts the pipeline embeds, computed with the pipeline's own functions."""
    texts: list[str] = []
    for record in split_records(corpus, media_type=JSONL, config=platform.settings.ingestion):
        _, chunks = prepare_chunks(
            record.data, media_type=JSON, filename=None, deps=platform.indexing
        )
        texts.extend(c.text for c in chunks)
    return texts


def raw_model(settings: Settings) -> Any:  # Any: SentenceTransformer is untyped
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = SentenceTransformer(str(resolve_model_path(settings.embedding.model)), device=device)
    return model.half() if device == "cuda" else model


def time_encode(model: Any, texts: list[str], batch_size: int) -> float:
    model.encode(texts[:batch_size], batch_size=batch_size, show_progress_bar=False)  # warm-up
    start = time.perf_counter()
    model.encode(texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
    return time.perf_counter() - start


def time_pipeline(platform: Platform, corpus: bytes) -> tuple[int, float]:
    """Upload ``corpus`` and wait until every document is indexed: (documents, seconds)."""
    with platform.sessions() as session:
        tenant = tenants.create_tenant(session, name="bench", quotas={})
        namespace = namespaces.create_namespace(
            session,
            tenant_id=tenant.id,
            name="scifact",
            embedding_model=platform.embedder.model_id,
            embedding_dimension=platform.embedder.dimension,
            indexed_fields={},
            routes={},
            store=platform.store,
        )
    start = time.perf_counter()
    with platform.sessions() as session:
        documents.upload(
            session,
            namespace=namespace,
            items=[UploadItem(data=corpus, filename="corpus.jsonl")],
            enqueue=platform.enqueue,
            ingestion=platform.settings.ingestion,
        )
    assert isinstance(platform.queue, InProcessQueue)  # noqa: S101 (embedded settings)
    platform.queue.join()
    elapsed = time.perf_counter() - start
    with platform.sessions() as session:
        counted = session.execute(select(Document.state, func.count()).group_by(Document.state))
        states = Counter(dict(counted.all()))  # the Result itself looks like a mapping
    if set(states) != {DocumentState.INDEXED}:
        raise SystemExit(f"the pipeline did not index everything: {dict(states)}")
    return states[DocumentState.INDEXED], elapsed


if __name__ == "__main__":
    main()
