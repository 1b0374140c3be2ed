"""Fixtures of the ingestion tests: token counters (Hypothesis profiles: ``tests/conftest.py``).

The real model itself is the session-wide ``embedder`` fixture of ``tests/conftest.py``;
counting tokens needs only its tokenizer, which loads in milliseconds without torch.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from ingestion.config import EmbeddingConfig
from ingestion.embedder import SentenceTransformerEmbedder

CountTokens = Callable[[str], int]


@pytest.fixture(scope="session")
def minilm_tokenizer() -> SentenceTransformerEmbedder:
    """The bundled MiniLM's configuration and tokenizer; the model itself is never loaded."""
    return SentenceTransformerEmbedder(EmbeddingConfig())


@pytest.fixture(scope="session")
def minilm_count(minilm_tokenizer: SentenceTransformerEmbedder) -> CountTokens:
    """MiniLM's real token count, [CLS] and [SEP] included."""
    return minilm_tokenizer.count_tokens


def noise(size: int, seed: int) -> bytes:
    """Reproducible random bytes: no encoding decodes them into text."""
    return random.Random(seed).randbytes(size)  # noqa: S311 - test data, not a secret
