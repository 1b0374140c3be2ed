"""What the read path needs from an embedding model.

``app`` hands in ingestion's ``SentenceTransformerEmbedder``, which satisfies this Protocol
structurally; retrieval never imports ingestion, and tests may pass any other implementation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt


class Embedder(Protocol):
    """An embedding model: texts in, unit-length vectors out."""

    @property
    def model_id(self) -> str:
        """Identifies the model and its weights; cache keys include it."""
        ...

    @property
    def dimension(self) -> int:
        """Length of every vector :meth:`encode` returns."""
        ...

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Embed ``texts``: one unit-normalised float32 row per text, in input order.

        Shape ``(len(texts), dimension)``; the dot product of two rows is their cosine.
        """
        ...
