"""What the read path needs from an embedding model.

``app`` hands in ingestion's embedders (torch or ONNX Runtime), which satisfy these Protocols
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


class ChunkEmbedder(Embedder, Protocol):
    """An :class:`Embedder` that indexing can drive: it knows its token limit, counts tokens,
    and takes the counts chunking already made.

    The shape of ``ingestion.embedder.ChunkEmbedder`` (which retrieval may not import), so
    :class:`retrieval.cache.CachedEmbedder` can wrap ingestion's embedders and stand in for them.
    """

    @property
    def max_seq_length(self) -> int:
        """Most tokens, special tokens included, the model reads."""
        ...

    def count_tokens(self, text: str) -> int:
        """The model's token count of ``text``."""
        ...

    def encode(
        self, texts: Sequence[str], *, token_counts: Sequence[int] | None = None
    ) -> npt.NDArray[np.float32]:
        """As :meth:`Embedder.encode`; ``token_counts``, one per text, spare counting again."""
        ...
