"""API keys: created with scopes, quotas and namespaces; shown whole only once."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from pydantic import BaseModel, Field, StringConstraints

from app.schemas.common import Name, Scope, Strict
from app.schemas.tenants import Quotas


class KeyCreate(Strict):
    name: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    scopes: list[Scope] = Field(min_length=1)
    quotas: Quotas = Field(
        Quotas(), description="The key's own budgets, enforced on top of its tenant's."
    )
    namespaces: list[Name] | None = Field(
        None,
        min_length=1,
        max_length=1000,
        description=(
            "Limit a write or query key to these of its tenant's namespaces; any other "
            "answers as a missing one, on every door (HTTP, OpenAI, MCP). Unset: all of them."
        ),
    )


class KeyUpdate(Strict):
    quotas: Quotas


class KeyPublic(BaseModel):
    id: str
    tenant_id: str | None
    name: str
    scopes: list[str]
    quotas: dict[str, Any]
    namespaces: list[str] | None = Field(description="The namespaces it is limited to; null: all.")
    created_at: dt.datetime
    revoked_at: dt.datetime | None


class KeyCreated(KeyPublic):
    key: str = Field(description="The whole key. Shown only in this response: store it now.")
