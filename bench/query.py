"""Query latency: Shoal's whole HTTP query path against the raw model and raw engine.

    python -m bench.query [--limit 1000] [--queries 300] [--concurrency 1,8,32]

Data: the first ``--limit`` SciFact abstracts, indexed through the embedded pipeline (SQLite,
Qdrant Edge, default settings: hybrid search, extractive answers); the questions are SciFact's
test claims, each asked once per measurement so the embedding cache misses unless stated.

Shoal: ``POST /v1/namespaces/{ns}/search`` to ``shoal serve`` in its own process, with httpx (auth,
usage accounting, the embedding cache, hybrid search, the visibility check) at concurrency 1, 8
and 32; and ``POST .../query``, which adds the extractive answer, at concurrency 1.

Baseline, same run, same data: the raw model on the runtime Shoal runs (``SentenceTransformer
.encode`` for torch; the exported ONNX file on ONNX Runtime, with no batching thread and no cache)
plus one raw Qdrant Edge query on the very shard Shoal wrote, in the same mode (dense + BM25 fused
the way the settings say), with no HTTP, no database and no answer: what a hand-written script
would do. At concurrency 1 it embeds one question at a time; at concurrency C it takes the
questions C at a time, embeds each group in one encode call and then runs its C queries, which
is what a competent engineer does with C questions in hand (C threads calling ``encode`` on one
model are slower). Each question's latency runs from its group's start to its own results.

Runtime: the question embedding alone on Shoal's runtime against raw torch fp32 ``encode``, one
question at a time, interleaved.

Cache: the same questions again (every embedding a hit) against the first pass, through the
same HTTP path, and the embedding step alone, hit against miss.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import httpx
import numpy as np
import numpy.typing as npt
import qdrant_edge as edge

from app.db.migrate import upgrade
from app.logging import configure_logging
from app.platform import build_platform
from app.services import evaluation, keys, tenants
from app.settings import Settings
from bench.ingest import describe_machine, raw_model
from harness.servers import free_port, wait_or_exit
from ingestion.embedder import resolve_backend
from ingestion.onnx_embedder import OnnxEmbedder
from retrieval.cache import embed_query, normalise_query

SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"


def percentile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def timed(calls: Sequence[Callable[[], object]], concurrency: int) -> tuple[list[float], float]:
    """Latency of each call in ms, and the wall time of all, ``concurrency`` at a time."""
    latencies: list[float] = []
    lock = threading.Lock()

    def run(call: Callable[[], object]) -> None:
        start = time.perf_counter()
        call()
        elapsed = (time.perf_counter() - start) * 1000
        with lock:
            latencies.append(elapsed)

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(run, calls))
    return latencies, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", type=Path, default=SCIFACT)
    parser.add_argument("--limit", type=int, default=1000, help="abstracts indexed")
    parser.add_argument("--queries", type=int, default=300, help="questions per measurement")
    parser.add_argument("--concurrency", default="1,8,32")
    args = parser.parse_args()

    data = evaluation.load_beir(args.data)
    questions = list(data.queries.values())[: args.queries]
    lines = [line for line in (args.data / "corpus.jsonl").read_bytes().splitlines() if line]
    with tempfile.TemporaryDirectory(prefix="shoal-bench-query-") as tmp:
        corpus = Path(tmp, "corpus.jsonl")
        corpus.write_bytes(b"\n".join(lines[: args.limit]) + b"\n")
        settings = Settings(data_dir=Path(tmp, "data"))
        configure_logging("WARNING")
        upgrade(settings.resolved_database_url)
        platform = build_platform(settings)
        platform.embedder.warm_up()
        with platform.sessions() as session:
            tenant = tenants.create_tenant(session, name="bench", quotas={})
            _, key = keys.create_key(session, tenant_id=tenant.id, name="q", scopes=["query"])
            session.commit()
            tenant_id = tenant.id
        namespace = evaluation.scratch_namespace(platform, tenant_id, "scifact")
        indexed, failed = evaluation.ingest_corpus(platform, namespace, corpus)
        print(f"# indexed {indexed}, failed {failed}", file=sys.stderr)
        # The embedding step alone: the cache's hit path against its miss path.
        embedder, cache = platform.query.embedder, platform.query.cache
        embed = functools.partial(embed_query, embedder, cache, scope=tenant_id)
        miss_ms = [_ms(embed, q + " (embed)") for q in questions]
        hit_ms = [_ms(embed, q + " (embed)") for q in questions]
        collection = namespace.collection
        platform.close()

        # `shoal serve` in its own process, as users run it, so the client's threads here do
        # not share the server's interpreter lock.
        port = free_port()
        server = subprocess.Popen(  # noqa: S603 (our own CLI)
            [
                sys.executable,
                "-c",
                "from app.cli import main; main()",
                "serve",
                "--port",
                str(port),
            ],
            env={
                **os.environ,
                "SHOAL_DATA_DIR": str(settings.data_dir),
                "SHOAL_LOG_LEVEL": "WARNING",
            },
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_or_exit(f"http://127.0.0.1:{port}/readyz")
        base = f"http://127.0.0.1:{port}/v1/namespaces/scifact"
        headers = {"Authorization": f"Bearer {key}"}
        concurrencies = [int(c) for c in args.concurrency.split(",")]
        with httpx.Client(timeout=120, limits=httpx.Limits(max_connections=64)) as client:

            def ask(endpoint: str, question: str) -> Callable[[], object]:
                def call() -> object:
                    body = {"question": question}
                    response = client.post(f"{base}/{endpoint}", json=body, headers=headers)
                    response.raise_for_status()
                    return response.json()

                return call

            ask("search", questions[0])()  # warm-up
            ask("query", questions[0])()
            # A new text per run, so every run misses the embedding cache like the first.
            search = {
                c: timed([ask("search", f"{q} ({c})") for q in questions], c) for c in concurrencies
            }
            answer = timed([ask("query", f"{q} (answer)") for q in questions], 1)
            # The same questions again: the embedding cache hits (and quoted sentences too).
            answer_hit = timed([ask("query", f"{q} (answer)") for q in questions], 1)
            search_hit = timed([ask("search", f"{q} (1)") for q in questions], 1)
        server.terminate()
        server.wait(timeout=30)

        # Baseline: the raw model and the raw shard Shoal wrote, same questions, same mode.
        raw_encode = raw_runtime(settings)
        torch_encode = raw_torch(settings)
        shard = edge.EdgeShard.load(str(Path(tmp, "data", "qdrant", collection)))
        top_k = settings.retrieval.top_k
        candidates = settings.retrieval.candidates
        fusion: Any = (  # the stub omits Fusion's nested classes
            edge.Fusion.Dbsf()
            if settings.retrieval.fusion == "dbsf"
            else edge.Fusion.Rrf(k=settings.retrieval.rrf_k)
        )

        def query(text: str, vector: list[float]) -> object:
            return shard.query(
                edge.QueryRequest(
                    prefetches=[
                        edge.Prefetch(limit=candidates, query=edge.Query.Nearest(vector)),
                        edge.Prefetch(limit=candidates, query=edge.TextQuery("text", text)),
                    ],
                    query=fusion,
                    limit=top_k,
                    with_payload=True,
                )
            )

        def raw(question: str) -> Callable[[], object]:
            def call() -> object:
                text = normalise_query(question)
                return query(text, raw_encode([text])[0].tolist())

            return call

        raw(questions[0])()
        baseline = {c: grouped(raw_encode, query, questions, c) for c in concurrencies}
        shard.close()
        runtime = compare_runtimes(raw_encode, torch_encode, questions)

    print(f"machine: {describe_machine()}")
    print(f"data: {indexed} SciFact abstracts, {len(questions)} questions per run")
    print("\nretrieval, `POST /search` (HTTP, auth, cache, hybrid search, visibility) against raw:")
    columns = ["concurrency", "Shoal p50 / p99 ms", "raw p50 / p99 ms", "p50 ratio", "p99 ratio"]
    print("| " + " | ".join([*columns, "Shoal q/s", "raw q/s"]) + " |")
    print("|---|---|---|---|---|---|---|")
    for c in concurrencies:
        (s, s_wall), (b, b_wall) = search[c], baseline[c]
        print(
            f"| {c} | {_p(s, 50):.1f} / {_p(s, 99):.1f} | {_p(b, 50):.1f} / {_p(b, 99):.1f} | "
            f"{_p(s, 50) / _p(b, 50):.2f} | {_p(s, 99) / _p(b, 99):.2f} | "
            f"{len(s) / s_wall:.1f} | {len(b) / b_wall:.1f} |"
        )
    print("\nanswers, `POST /query` (the above plus the extractive answer), concurrency 1:")
    print("| run | p50 ms | p99 ms | ratio p50 to raw |")
    print("|---|---|---|---|")
    raw_p50 = _p(baseline[1][0], 50)
    for name, (samples, _) in (("cache misses", answer), ("cache hits", answer_hit)):
        print(
            f"| {name} | {_p(samples, 50):.1f} | {_p(samples, 99):.1f} | "
            f"{_p(samples, 50) / raw_p50:.2f} |"
        )
    torch_ms, shoal_ms = runtime
    print(
        f"\nruntime: one question embedded, raw torch fp32 p50 {torch_ms:.2f} ms, "
        f"{settings.embedding.backend} backend ({backend_name(settings)}) p50 {shoal_ms:.2f} ms, "
        f"speed-up {torch_ms / shoal_ms:.2f}x"
    )
    miss, hit = statistics.median(miss_ms), statistics.median(hit_ms)
    print(
        f"\nembedding cache: the embedding step, miss p50 {miss:.2f} ms, hit p50 {hit:.3f} ms, "
        f"ratio {miss / hit:.0f}x; `/search` p50 miss {_p(search[1][0], 50):.1f} ms, "
        f"hit {_p(search_hit[0], 50):.1f} ms"
    )


Encode = Callable[[Sequence[str]], npt.NDArray[np.float32]]


def backend_name(settings: Settings) -> str:
    backend = resolve_backend(settings.embedding)
    return f"onnx {settings.embedding.onnx_precision}" if backend == "onnx" else "torch"


def raw_runtime(settings: Settings) -> Encode:
    """The model on the runtime Shoal resolves to, called directly: what a script would do."""
    if resolve_backend(settings.embedding) == "torch":
        return raw_torch(settings)
    onnx = OnnxEmbedder(settings.embedding, cache_dir=settings.model_cache_dir)
    return onnx.encode


def raw_torch(settings: Settings) -> Encode:
    model = raw_model(settings)

    def encode(texts: Sequence[str]) -> npt.NDArray[np.float32]:
        vectors: npt.NDArray[np.float32] = model.encode(
            list(texts), batch_size=len(texts), normalize_embeddings=True
        )
        return vectors

    return encode


def grouped(
    encode: Encode, query: Callable[[str, list[float]], object], questions: Sequence[str], size: int
) -> tuple[list[float], float]:
    """The raw baseline at concurrency ``size``: questions ``size`` at a time, each group
    embedded in one call, then searched; latencies from the group's start (ms), and the wall."""
    latencies: list[float] = []
    started = time.perf_counter()
    for start in range(0, len(questions), size):
        group_start = time.perf_counter()
        texts = [normalise_query(q) for q in questions[start : start + size]]
        for text, vector in zip(texts, encode(texts), strict=True):
            query(text, vector.tolist())
            latencies.append((time.perf_counter() - group_start) * 1000)
    return latencies, time.perf_counter() - started


def compare_runtimes(
    shoal: Encode, torch_fp32: Encode, questions: Sequence[str]
) -> tuple[float, float]:
    """p50 ms of one question embedded by raw torch fp32 and by Shoal's runtime, interleaved."""
    torch_ms: list[float] = []
    shoal_ms: list[float] = []
    for question in questions:
        text = normalise_query(question) + " (runtime)"
        torch_ms.append(_ms(torch_fp32, [text]))
        shoal_ms.append(_ms(shoal, [text]))
    return statistics.median(torch_ms), statistics.median(shoal_ms)


def _p(samples: Sequence[float], q: float) -> float:
    return percentile(samples, q)


def _ms(call: Callable[..., Any], *args: Any) -> float:
    start = time.perf_counter()
    call(*args)
    return (time.perf_counter() - start) * 1000


if __name__ == "__main__":
    main()
