"""A tenant's usage page: requests, rate-limit rejections and model tokens per day over the last
30 days, drawn as server-rendered SVG bar charts (no script, nothing fetched) with the same
numbers in a table. Platform admins reach every tenant's, a tenant admin only its own."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.console.web import ConsoleDep, ConsoleRoute, render, see_other
from app.db.models import Usage
from app.gateway.deps import PlatformDep, SessionDep
from app.services import keys, tenants, usage

router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)

DAYS = 30
# The charts' drawing box (the SVG's viewBox; CSS scales it to the page's width).
WIDTH, HEIGHT, BOTTOM = 600, 160, 140


@dataclass(frozen=True)
class Day:
    """One UTC day's totals, all keys together."""

    day: dt.date
    requests: int = 0
    rejected: int = 0
    tokens: int = 0


@dataclass(frozen=True)
class Bar:
    """One day's column: ``x`` and ``width`` across; each segment a (y, height) from the top."""

    day: Day
    x: float
    width: float
    segments: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Chart:
    """Bars scaled to the largest day's total, ``top`` (0: nothing to draw)."""

    bars: list[Bar]
    top: int


def by_day(rows: Iterable[Usage], *, today: dt.date, days: int = DAYS) -> list[Day]:
    """Totals per day for the ``days`` days up to ``today``, oldest first; quiet days are 0."""
    totals = {today - dt.timedelta(days=n): [0, 0, 0] for n in range(days)}
    for row in rows:
        if row.day in totals:
            counts = totals[row.day]
            counts[0] += row.requests
            counts[1] += row.rejected
            counts[2] += row.prompt_tokens + row.completion_tokens
    return [Day(day, *counts) for day, counts in sorted(totals.items())]


def chart(days: Sequence[Day], *series: str) -> Chart:
    """Stacked bars of the ``series`` (Day's fields), one per day, the first at the bottom."""
    top = max((sum(getattr(d, s) for s in series) for d in days), default=0)
    scale = max(top, 1)
    step = WIDTH / max(len(days), 1)
    bars = []
    for n, day in enumerate(days):
        base, segments = float(BOTTOM), []
        for name in series:
            height = BOTTOM * getattr(day, name) / scale
            base -= height
            segments.append((round(base, 2), round(height, 2)))
        bars.append(
            Bar(day, round(n * step + step * 0.15, 2), round(step * 0.7, 2), tuple(segments))
        )
    return Chart(bars, top)


@router.get("/usage")
def own_usage(console: ConsoleDep) -> Response:
    """A tenant admin's own usage (platform keys belong to no tenant: the tenant list)."""
    if console.caller.tenant_id is None:
        return see_other("/console/tenants")
    return see_other(f"/console/tenants/{console.caller.tenant_id}/usage")


@router.get("/tenants/{tenant_id}/usage")
def usage_page(
    request: Request, tenant_id: str, console: ConsoleDep, db: SessionDep, platform: PlatformDep
) -> Response:
    keys.authorize_tenant_admin(console.caller, tenant_id)
    tenant = tenants.get_tenant(db, tenant_id=tenant_id)
    # This replica's last second too, as GET /v1/admin/tenants/{id}/usage (the flush commits on
    # its own connection: end this session's transaction first, for SQLite's write lock).
    db.commit()
    platform.usage.flush()
    rows = usage.usage_for_tenant(db, tenant_id=tenant_id, days=DAYS)
    days = by_day(rows, today=dt.datetime.now(dt.UTC).date())
    return render(
        request,
        "usage.html",
        tenant=tenant,
        days=days,
        requests=chart(days, "requests", "rejected"),
        tokens=chart(days, "tokens"),
        width=WIDTH,
        height=HEIGHT,
        bottom=BOTTOM,
        any_use=any(d.requests or d.rejected or d.tokens for d in days),
    )
