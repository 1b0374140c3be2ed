"""Ingestion throughput: Shoal's whole pipeline against the raw model on the same chunks.

    python -m bench.ingest [--limit N] [--batch-sizes 4,8,10,16,32,64] [--concurrency C]

Pipeline: the embedded platform (SQLite, Qdrant Edge on disk, in-process runner, default
settings) takes the SciFact corpus as one JSONL upload, one document per record, and the clock
runs from the upload call until every document is ``indexed``: splitting, hashing, the
database, parsing, chunking, embedding and upserts included.

Baselines, each at the batch size fastest on this machine (swept on a sample first, in this
run), encoding exactly the chunks the pipeline embeds:

- the same runtime as the pipeline's, called directly: ``SentenceTransformer.encode`` when the
  pipeline runs torch (fp16 on CUDA), the exported ONNX file on ONNX Runtime when it runs ONNX;
  ``baseline seconds / pipeline seconds`` says how close the whole pipeline comes to its model
  alone (1.0: the pipeline costs nothing on top);
- raw torch fp32 ``SentenceTransformer.encode`` (on a CPU), the limit of any pipeline that runs
  torch there: how much faster than that the pipeline runs.
"""

from __future__ import annotations

import argparse
import os
import platform as host
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
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
from app.services.indexing import prepare_chunks
from app.services.uploads import UploadItem
from app.settings import Settings
from ingestion.embedder import resolve_backend, resolve_model_path
from ingestion.onnx_embedder import OnnxEmbedder
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
            sizes = [int(s) for s in args.batch_sizes.split(",")]
            runtime = resolve_backend(settings.embedding)
            same = raw_encoder(settings, runtime)
            baselines = {"same runtime": best_of(same, texts, sizes)}
            if runtime != "torch":
                baselines["torch fp32"] = best_of(raw_encoder(settings, "torch"), texts, sizes)
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
        ("pipeline runtime", f"{runtime} ({platform.embedder.model_id})"),
        ("pipeline: upload → all indexed", f"{pipeline_s:.1f} s"),
        ("pipeline documents/s", f"{count / pipeline_s:.1f}"),
        ("pipeline chunks/s", f"{len(texts) / pipeline_s:.1f}"),
    ]
    for name, (sweep, best, seconds) in baselines.items():
        rows += [
            (f"{name}: raw encode sweep (chunks/s)", ", ".join(f"{b}: {r:.0f}" for b, r in sweep)),
            (f"{name}: raw encode at batch {best}", f"{seconds:.1f} s"),
            (f"ratio to {name} (baseline s / pipeline s)", f"{seconds / pipeline_s:.3f}"),
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


Encode = Callable[[list[str], int], object]


def raw_encoder(settings: Settings, runtime: str) -> Encode:
    """``encode(texts, batch_size)`` on ``runtime`` (``torch`` or ``onnx``), called directly."""
    if runtime == "torch":
        model = raw_model(settings)

        def torch_encode(texts: list[str], batch_size: int) -> object:
            return model.encode(
                texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False
            )

        return torch_encode
    sessions: dict[int, OnnxEmbedder] = {}

    def onnx_encode(texts: list[str], batch_size: int) -> object:
        if batch_size not in sessions:  # one session per batch size: the setting is fixed
            config = settings.embedding.model_copy(update={"batch_size": batch_size})
            sessions[batch_size] = OnnxEmbedder(config, cache_dir=settings.model_cache_dir)
        return sessions[batch_size].encode(texts)

    return onnx_encode


def best_of(
    encode: Encode, texts: list[str], sizes: list[int]
) -> tuple[list[tuple[int, float]], int, float]:
    """Sweep ``sizes`` on a sample, then time every text at the fastest: (sweep, best, s)."""
    sample = texts[:SWEEP_SAMPLE]
    sweep = [(size, len(sample) / time_encode(encode, sample, size)) for size in sizes]
    best = max(sweep, key=lambda rate: rate[1])[0]
    print(f"# {len(texts)} chunks; sweep {sweep}", file=sys.stderr)
    seconds = time_encode(encode, texts, best)
    print(f"# baseline at batch {best}: {seconds:.1f} s", file=sys.stderr)
    return sweep, best, seconds


def time_encode(encode: Encode, texts: list[str], batch_size: int) -> float:
    encode(texts[:batch_size], batch_size)  # warm-up
    start = time.perf_counter()
    encode(texts, batch_size)
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
