"""Per tenant, key and UTC day: requests and tokens, for admins and billing."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db.models import Usage


def record_usage(
    session: Session,
    *,
    tenant_id: str,
    key_id: str,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
) -> None:
    """Add one request and its tokens to today's row for (tenant, key), and commit.

    An atomic ``UPDATE ... SET n = n + 1`` first; the row is inserted only the first time each
    day, and a racing insert falls back to the update, so concurrent requests never lose counts.
    """
    day = dt.datetime.now(dt.UTC).date()
    key = (Usage.tenant_id == tenant_id, Usage.key_id == key_id, Usage.day == day)
    increment = (
        update(Usage)
        .where(*key)
        .values(
            requests=Usage.requests + 1,
            prompt_tokens=Usage.prompt_tokens + prompt_tokens,
            completion_tokens=Usage.completion_tokens + completion_tokens,
        )
    )
    if session.execute(increment).rowcount == 0:  # type: ignore[attr-defined]  # CursorResult
        try:
            with session.begin_nested():
                session.add(
                    Usage(
                        tenant_id=tenant_id,
                        key_id=key_id,
                        day=day,
                        requests=1,
                        prompt_tokens=prompt_tokens,
                        completion_tokens=completion_tokens,
                    )
                )
        except IntegrityError:
            session.execute(increment)
    session.commit()


def usage_for_tenant(session: Session, *, tenant_id: str, days: int = 30) -> list[Usage]:
    """Rows of the last ``days`` days, newest first."""
    since = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=days - 1)
    query = select(Usage).where(Usage.tenant_id == tenant_id, Usage.day >= since)
    return list(session.scalars(query.order_by(Usage.day.desc(), Usage.key_id)))
