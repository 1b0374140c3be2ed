"""Query latency: Shoal's whole HTTP query path against the raw model and raw engine.

    python -m bench.query [--limit 1000] [--queries 300] [--concurrency 1,8,32]

Data: the first ``--limit`` SciFact abstracts, indexed through the embedded pipeline (SQLite,
Qdrant Edge, default settings: hybrid search, extractive answers); the questions are SciFact's
test claims, each asked once per measurement so the embedding cache misses unless stated.

Shoal: ``POST /v1/namespaces/{ns}/query`` through uvicorn on a real socket with httpx: auth,
usage accounting, the embedding cache, hybrid search, the visibility check and the extractive
answer, at concurrency 1, 8 and 32.

Baseline, same run, same data: the raw ``SentenceTransformer.encode`` of the question plus one
raw Qdrant Edge query on the very shard Shoal wrote, in the same mode (dense + BM25 fused by
RRF), with no HTTP, no database and no answer: what a hand-written script would do.

Cache: the same questions again (every embedding a hit) against the first pass, through the
same HTTP path, and the embedding step alone, hit against miss.
"""

from __future__ import annotations

import argparse
import os
import statistics
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
import qdrant_edge as edge
import uvicorn

from app.db.migrate import upgrade
from app.logging import configure_logging
from app.main import create_app
from app.platform import build_platform
from app.services import evaluation, keys, tenants
from app.settings import Settings
from bench.ingest import describe_machine, raw_model
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

        server = uvicorn.Server(
            uvicorn.Config(create_app(settings, platform=platform), port=0, log_config=None)
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}/v1/namespaces/scifact/query"
        headers = {"Authorization": f"Bearer {key}"}
        concurrencies = [int(c) for c in args.concurrency.split(",")]
        with httpx.Client(timeout=60, limits=httpx.Limits(max_connections=64)) as client:

            def ask(question: str) -> Callable[[], object]:
                def call() -> object:
                    response = client.post(url, json={"question": question}, headers=headers)
                    response.raise_for_status()
                    return response.json()

                return call

            ask(questions[0])()  # warm-up
            shoal: dict[int, tuple[list[float], float]] = {}
            for concurrency in concurrencies:
                # New question text per run, so every run misses the cache like the first.
                salt = f" ({concurrency})"
                shoal[concurrency] = timed([ask(q + salt) for q in questions], concurrency)
            hits, _ = timed([ask(q + f" ({concurrencies[-1]})") for q in questions], 1)
        server.should_exit = True
        thread.join()

        # The embedding step alone: the cache's hit path against its miss path.
        embedder, cache = platform.query.embedder, platform.query.cache
        miss_ms = [_ms(lambda q=q: embed_query(embedder, cache, q + " (embed)")) for q in questions]
        hit_ms = [_ms(lambda q=q: embed_query(embedder, cache, q + " (embed)")) for q in questions]
        collection = namespace.collection
        platform.close()

        # Baseline: the raw model and the raw shard Shoal wrote, same questions, same mode.
        model = raw_model(settings)
        shard = edge.EdgeShard.load(str(Path(tmp, "data", "qdrant", collection)))
        top_k = settings.retrieval.top_k
        candidates = settings.retrieval.candidates

        def raw(question: str) -> Callable[[], object]:
            def call() -> object:
                text = normalise_query(question)
                vector = model.encode([text], normalize_embeddings=True)[0].tolist()
                return shard.query(
                    edge.QueryRequest(
                        prefetches=[
                            edge.Prefetch(limit=candidates, query=edge.Query.Nearest(vector)),
                            edge.Prefetch(limit=candidates, query=edge.TextQuery("text", text)),
                        ],
                        query=edge.Fusion.Rrf(k=settings.retrieval.rrf_k),  # type: ignore[arg-type]
                        limit=top_k,
                        with_payload=True,
                    )
                )

            return call

        raw(questions[0])()
        baseline = {c: timed([raw(q) for q in questions], c) for c in concurrencies}
        shard.close()

    print(f"machine: {describe_machine()}")
    print(f"data: {indexed} SciFact abstracts, {len(questions)} questions per run")
    columns = ["concurrency", "Shoal p50 / p99 ms", "raw p50 / p99 ms", "p50 ratio", "p99 ratio"]
    print("| " + " | ".join([*columns, "Shoal q/s"]) + " |")
    print("|---|---|---|---|---|---|")
    for c in concurrencies:
        (s, s_wall), (b, _) = shoal[c], baseline[c]
        print(
            f"| {c} | {percentile(s, 50):.1f} / {percentile(s, 99):.1f} | "
            f"{percentile(b, 50):.1f} / {percentile(b, 99):.1f} | "
            f"{percentile(s, 50) / percentile(b, 50):.2f} | "
            f"{percentile(s, 99) / percentile(b, 99):.2f} | {len(s) / s_wall:.1f} |"
        )
    first = shoal[1][0]
    print(
        f"cache, HTTP path: miss p50 {percentile(first, 50):.1f} ms, hit p50 "
        f"{percentile(hits, 50):.1f} ms"
    )
    miss, hit = statistics.median(miss_ms), statistics.median(hit_ms)
    print(
        f"cache, embedding step: miss p50 {miss:.2f} ms, hit p50 {hit:.3f} ms, "
        f"ratio {miss / hit:.0f}x"
    )


def _ms(call: Callable[..., Any], *args: Any) -> float:
    start = time.perf_counter()
    call(*args)
    return (time.perf_counter() - start) * 1000


if __name__ == "__main__":
    main()
