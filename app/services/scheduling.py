"""Handing new documents to the task queue, fairly across tenants (:mod:`workers.fairness`)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import PENDING_STATES, Document
from workers.fairness import priority_for
from workers.queue import TaskQueue


def enqueue_fairly(
    sessions: sessionmaker[Session],
    queue: TaskQueue,
    tenant_id: str,
    document_ids: Sequence[str],
) -> None:
    """Queue ``document_ids`` (already committed as pending) behind the tenant's own backlog.

    The backlog is the tenant's pending documents other than these: a quiet tenant's upload
    starts at the highest priority whatever other tenants have queued.
    """
    with sessions() as session:
        pending = session.scalar(
            select(func.count())
            .select_from(Document)
            .where(Document.tenant_id == tenant_id, Document.state.in_(PENDING_STATES))
        )
    ahead = max(0, (pending or 0) - len(document_ids))
    for position, document_id in enumerate(document_ids, start=ahead):
        queue.enqueue(document_id, priority=priority_for(position))
