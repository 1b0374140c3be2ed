"""The task queue interface: the in-process runner (embedded) and Celery (distributed)."""

from __future__ import annotations

from typing import Protocol


class TaskQueue(Protocol):
    """Hands document ids to whatever indexes them. Ids, never objects: the worker re-reads."""

    def enqueue(self, document_id: str, *, priority: int = 0) -> None:
        """Schedule indexing of ``document_id``; returns at once. ``priority`` 0 is served
        first, 9 last (:mod:`workers.fairness`)."""

    def depth(self) -> int:
        """Tasks accepted and not yet finished (an autoscaling and readiness signal)."""

    def close(self, *, wait: bool = True) -> None:
        """Stop accepting tasks; with ``wait``, finish those running first. Tasks not started
        may be dropped: the durable record of pending work is the database, not the queue."""
