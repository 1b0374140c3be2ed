"""Answer generation backends; :mod:`retrieval.generation.base` holds the shared types."""

from __future__ import annotations

from retrieval.generation.base import Answer, Citation, GenerationBackend, Passage

__all__ = ["Answer", "Citation", "GenerationBackend", "Passage"]
