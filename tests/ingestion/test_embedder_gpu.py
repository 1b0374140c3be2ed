"""The CUDA path: half precision on the GPU, vectors that agree with the CPU's.

Marked ``gpu``: it runs wherever CUDA is present and skips only where it is not (CI has no GPU).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ingestion.config import CUDA_BATCH_SIZE, EmbeddingConfig
from ingestion.embedder import SentenceTransformerEmbedder

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine"),
]

TEXTS = [
    "Mitochondria are the powerhouse of the cell.",
    "The central bank raised interest rates by a quarter point.",
    "word " * 254,  # the longest text MiniLM reads
    "",
] * 50


def test_auto_device_runs_on_cuda_in_half_precision_with_a_gpu_batch() -> None:
    gpu = SentenceTransformerEmbedder(EmbeddingConfig(device="auto"))
    gpu.warm_up()
    assert gpu.device == "cuda"
    assert gpu.batch_size == CUDA_BATCH_SIZE
    model = gpu._load()  # the real SentenceTransformer, to read its weights' precision
    assert next(model.parameters()).dtype == torch.float16


def test_half_precision_vectors_agree_with_the_cpu_in_float32() -> None:
    gpu = SentenceTransformerEmbedder(EmbeddingConfig(device="cuda"))
    cpu = SentenceTransformerEmbedder(EmbeddingConfig(device="cpu"))
    on_gpu, on_cpu = gpu.encode(TEXTS), cpu.encode(TEXTS)
    assert on_gpu.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(on_gpu, axis=1), 1.0, atol=1e-5)
    cosines = np.sum(on_gpu * on_cpu, axis=1)
    assert cosines.min() > 0.999  # fp16 rounding, not a different embedding
