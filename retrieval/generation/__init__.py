"""Answer generation backends; :mod:`retrieval.generation.base` holds the shared types."""

from __future__ import annotations

from retrieval.generation.base import (
    Answer,
    Citation,
    Delta,
    GenerationBackend,
    Passage,
    StreamEvent,
)

__all__ = ["Answer", "Citation", "Delta", "GenerationBackend", "Passage", "StreamEvent"]
