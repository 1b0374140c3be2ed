"""Namespaces: their indexed fields, routes and search settings."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, Field

from app.schemas.common import FieldType, Name, Strict
from retrieval.config import Fusion, RoutesConfig, SearchMode


class SearchSettings(Strict):
    """How a namespace's queries search; unset fields take the server's defaults
    (``SHOAL_RETRIEVAL__...``). A query may override ``mode`` and ``rerank``.

    The fields of :class:`retrieval.config.SearchOptions`, each optional (a test holds them
    equal, bounds included)."""

    mode: SearchMode | None = Field(
        None,
        description=(
            "`hybrid`: dense and BM25 rankings merged as `fusion` says; `dense`: the "
            "embedding alone; `lexical`: BM25 alone."
        ),
    )
    fusion: Fusion | None = Field(
        None,
        description="`dbsf` (distribution-based score fusion) or `rrf` (reciprocal rank fusion).",
    )
    candidates: int | None = Field(
        None, ge=10, le=1000, description="Points each signal contributes to hybrid fusion."
    )
    rrf_k: int | None = Field(None, ge=1, le=1000, description="The k of `rrf` fusion.")
    dense_weight: float | None = Field(
        None, ge=0, le=10, description="Dense weight (`rrf` only; `dbsf` takes none)."
    )
    lexical_weight: float | None = Field(
        None, ge=0, le=10, description="BM25 weight (`rrf` only; `dbsf` takes none)."
    )
    rerank: bool | None = Field(
        None, description="Reorder the candidates with the server's reranker (if configured)."
    )
    min_score: float | None = Field(
        None,
        ge=-1,
        le=1,
        description=(
            "Abstain unless the best passage's cosine reaches this, instead of the evidence "
            "gate's decision (`SHOAL_RETRIEVAL__MIN_SCORE`)."
        ),
    )
    evidence_threshold: float | None = Field(
        None,
        ge=0,
        le=1,
        description=(
            "The evidence gate's bar for this namespace: lower answers more, higher abstains "
            "more (`SHOAL_RETRIEVAL__EVIDENCE_THRESHOLD`)."
        ),
    )


class NamespaceCreate(Strict):
    name: Name
    embedding_model: str | None = Field(None, description="Unset: the server's model.")
    indexed_fields: dict[str, FieldType] = Field(default_factory=dict)
    routes: RoutesConfig | None = Field(
        None, description="`small`/`large` generation routes; unset: the server's default."
    )
    search: SearchSettings = Field(default_factory=SearchSettings)


class NamespaceUpdate(Strict):
    indexed_fields: dict[str, FieldType] | None = None
    routes: RoutesConfig | None = Field(
        None, description="Replaces the routes; `{}` returns to the server's default."
    )
    search: SearchSettings | None = None


class NamespacePublic(BaseModel):
    id: str
    name: str
    embedding_model: str
    embedding_dimension: int
    indexed_fields: dict[str, str]
    routes: dict[str, Any]
    search: dict[str, Any]
    created_at: dt.datetime
