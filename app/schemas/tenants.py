"""Tenants: their bodies, their quotas (keys share the shape), and their usage."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from pydantic import BaseModel, Field, StringConstraints

from app.schemas.common import Strict


class Quotas(Strict):
    """Per-minute budgets. On a PATCH, `null` removes one (a tenant then falls back to the
    server's default, `SHOAL_LIMITS__DEFAULT_...`; a key to its tenant's alone)."""

    requests_per_minute: int | None = Field(
        None, ge=1, le=10**9, description="Requests per minute, counted on every request."
    )
    tokens_per_minute: int | None = Field(
        None,
        ge=1,
        le=10**12,
        description=(
            "Model tokens per minute (prompt + answer): reserved before generation, "
            "settled with the real usage after."
        ),
    )


class TenantCreate(Strict):
    name: Annotated[str, StringConstraints(min_length=1, max_length=128, strip_whitespace=True)]
    quotas: Quotas = Quotas()


class TenantUpdate(Strict):
    quotas: Quotas


class TenantPublic(BaseModel):
    id: str
    name: str
    quotas: dict[str, Any]
    created_at: dt.datetime


class UsagePublic(BaseModel):
    day: dt.date
    key_id: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    rejected: int = Field(
        description="Requests the rate limits refused with a 429 (not counted in `requests`)."
    )
