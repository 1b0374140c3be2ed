"""Fault drills (``SHOAL_ENABLE_FAULTS=true``): a fault to inject, and one in force."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, Field

from app.schemas.common import Strict


class _FaultCreate(Strict):
    target: Literal["vector_store", "embedder", "generator", "cache", "broker"]
    ttl_s: float | None = Field(
        None, gt=0, le=7 * 24 * 3600, description="Lifetime of the fault. Unset: until cleared."
    )


class ErrorFaultCreate(_FaultCreate):
    """A fault drill (`SHOAL_ENABLE_FAULTS=true`): the target's calls fail, as its outage fails
    them."""

    mode: Literal["error"]
    delay_ms: int | None = Field(None, ge=1, le=600_000, description="Wait before each call first.")


class DelayFaultCreate(_FaultCreate):
    """A fault drill (`SHOAL_ENABLE_FAULTS=true`): the target's calls wait, then go on."""

    mode: Literal["delay"]
    delay_ms: int = Field(ge=1, le=600_000, description="Wait before each call.")


# The schema says what `mode` requires (a delay needs its duration), so a client's validator
# knows it too; the router reads `mode` as the discriminator.
FaultCreate = ErrorFaultCreate | DelayFaultCreate


class FaultPublic(BaseModel):
    target: str
    mode: str
    delay_ms: int
    expires_at: dt.datetime | None
