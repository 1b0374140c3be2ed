"""Embedding runtimes on the CPU: raw torch fp32 ``encode`` against ONNX Runtime fp32 and int8.

    python -m bench.embedding_runtime [--limit 400] [--rounds 3] [--batch-sizes 1,4,8,16,32,64]

The texts are the chunks the pipeline makes of the first ``--limit`` SciFact abstracts. Each
runtime is swept over batch sizes on a sample, then timed at its best batch size on every
chunk, ``--rounds`` times, the runtimes interleaved within each round so that a busy machine
slows them alike; the ratios are taken within a round and the median is printed. Quality: the
cosine of each ONNX vector to torch fp32's of the same chunk (min, 1st percentile, mean).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import numpy.typing as npt
import torch
from sentence_transformers import SentenceTransformer

from bench.ingest import CORPUS, describe_machine
from ingestion.chunking import chunk
from ingestion.config import EmbeddingConfig, IngestionConfig, OnnxPrecision
from ingestion.embedder import SentenceTransformerEmbedder, resolve_model_path
from ingestion.onnx_embedder import OnnxEmbedder
from ingestion.parsers import JSON, JSONL, parse, split_records

SWEEP_SAMPLE = 96
Encode = Callable[[Sequence[str], int], npt.NDArray[np.float32]]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--limit", type=int, default=400, help="the first N abstracts")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-sizes", default="1,4,8,16,32,64")
    args = parser.parse_args()
    sizes = [int(s) for s in args.batch_sizes.split(",")]

    texts = scifact_chunks(args.corpus, args.limit)
    rng = np.random.default_rng(0)
    sample = [texts[i] for i in rng.choice(len(texts), min(SWEEP_SAMPLE, len(texts)), False)]
    with tempfile.TemporaryDirectory(prefix="shoal-bench-onnx-") as cache:
        runtimes = {
            "torch fp32": torch_encode(),
            "onnx fp32": onnx_encode("fp32", Path(cache)),
            "onnx int8": onnx_encode("int8", Path(cache)),
        }
        for encode in runtimes.values():
            for size in sizes:
                encode(texts[:8], size)  # export, load, warm up
        sweep: dict[str, dict[int, list[float]]] = {n: {s: [] for s in sizes} for n in runtimes}
        for _ in range(args.rounds):
            for size in sizes:
                for name, encode in runtimes.items():
                    sweep[name][size].append(len(sample) / timed(encode, sample, size)[1])
        best = {name: fastest(rates) for name, rates in sweep.items()}
        print(f"# sweep done: best batch sizes {best}", file=sys.stderr)
        seconds: dict[str, list[float]] = {name: [] for name in runtimes}
        vectors: dict[str, npt.NDArray[np.float32]] = {}
        for _ in range(args.rounds):
            for name, encode in runtimes.items():
                vectors[name], elapsed = timed(encode, texts, best[name])
                seconds[name].append(elapsed)

    print(f"machine: {describe_machine()}, load average {os.getloadavg()[0]:.1f} at the end")
    print(f"{args.limit} SciFact abstracts, {len(texts)} chunks, {args.rounds} rounds\n")
    print("| runtime | batch sweep (chunks/s, median) | best batch | documents/s (median) |")
    print("|---|---|---|---|")
    for name in runtimes:
        swept = ", ".join(f"{s}: {statistics.median(sweep[name][s]):.1f}" for s in sizes)
        docs = statistics.median(args.limit / s for s in seconds[name])
        print(f"| {name} | {swept} | {best[name]} | {docs:.1f} |")
    print("\n| runtime | speed vs torch fp32 (per round) | cosine to torch fp32: min / p1 / mean |")
    print("|---|---|---|")
    reference = vectors["torch fp32"]
    for name in runtimes:
        ratios = [t / s for t, s in zip(seconds["torch fp32"], seconds[name], strict=True)]
        cosine = np.sum(vectors[name] * reference, axis=1)
        rounds = ", ".join(f"{r:.2f}" for r in ratios)
        print(
            f"| {name} | {statistics.median(ratios):.2f}x ({rounds}) | "
            f"{cosine.min():.4f} / {np.percentile(cosine, 1):.4f} / {cosine.mean():.4f} |"
        )


def fastest(rates: dict[int, list[float]]) -> int:
    """The batch size with the highest median rate."""
    return max(rates, key=lambda size: statistics.median(rates[size]))


def scifact_chunks(corpus: Path, limit: int) -> list[str]:
    """The chunk texts the pipeline embeds for the first ``limit`` records of ``corpus``."""
    lines = [line for line in corpus.read_bytes().splitlines() if line.strip()][:limit]
    config = IngestionConfig()
    counter = SentenceTransformerEmbedder(EmbeddingConfig())
    texts: list[str] = []
    for record in split_records(b"\n".join(lines) + b"\n", media_type=JSONL, config=config):
        parsed = parse(record.data, media_type=JSON, filename=None, config=config)
        pieces = chunk(parsed, max_tokens=256, overlap_tokens=32, count_tokens=counter.count_tokens)
        texts.extend(c.text for c in pieces)
    return texts


def torch_encode() -> Encode:
    model = SentenceTransformer(str(resolve_model_path("all-MiniLM-L6-v2")), device="cpu")

    def encode(texts: Sequence[str], batch_size: int) -> npt.NDArray[np.float32]:
        with torch.inference_mode():
            vectors = model.encode(
                list(texts),
                batch_size=batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32)

    return encode


def onnx_encode(precision: OnnxPrecision, cache: Path) -> Encode:
    embedders: dict[int, OnnxEmbedder] = {}

    def encode(texts: Sequence[str], batch_size: int) -> npt.NDArray[np.float32]:
        if batch_size not in embedders:
            config = EmbeddingConfig(
                backend="onnx", onnx_precision=precision, batch_size=batch_size
            )
            embedders[batch_size] = OnnxEmbedder(config, cache_dir=cache)
        return embedders[batch_size].encode(texts)

    return encode


def timed(
    encode: Encode, texts: Sequence[str], batch_size: int
) -> tuple[npt.NDArray[np.float32], float]:
    start = time.perf_counter()
    vectors = encode(texts, batch_size)
    return vectors, time.perf_counter() - start


if __name__ == "__main__":
    main()
