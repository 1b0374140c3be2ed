"""The reaper: no document stays pending forever.

A worker that dies mid-document leaves it in ``parsing`` or ``embedding``; a broker that lost a
message, or an API that crashed between committing an upload and publishing it, leaves it
``queued`` with nothing on its way. Each worker periodically looks for pending documents that
have not changed for longer than the visibility timeout and queues them again. The claim is a
conditional ``UPDATE`` (state and timestamp unchanged since we read them), so several reapers
racing queue each document once, and the timestamp it writes restarts the clock.

A document that was in ``parsing``/``embedding`` was already taken once: it goes to the front.
One still ``queued`` may merely be waiting behind a long backlog, with its message still in the
broker: it goes to the back, so that a duplicate never jumps the queue (indexing is idempotent,
so the duplicate costs one database read).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable

import structlog
from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import PENDING_STATES, Document, DocumentState, utcnow
from workers.fairness import HIGHEST, LOWEST

log = structlog.get_logger(__name__)

BATCH = 500

Enqueue = Callable[[str, int], None]  # (document_id, priority)


def requeue_stuck(
    sessions: sessionmaker[Session],
    *,
    older_than_s: float,
    enqueue: Enqueue,
    now: dt.datetime | None = None,
) -> list[str]:
    """Queue again the pending documents untouched for ``older_than_s``; returns their ids."""
    now = now or utcnow()
    cutoff = now - dt.timedelta(seconds=older_than_s)
    claimed: list[tuple[str, DocumentState]] = []
    with sessions() as session:
        rows = session.execute(
            select(Document.id, Document.state, Document.updated_at)
            .where(Document.state.in_(PENDING_STATES), Document.updated_at < cutoff)
            .order_by(Document.updated_at)
            .limit(BATCH)
        ).all()
        for document_id, state, updated_at in rows:
            result = session.execute(
                update(Document)
                .where(
                    Document.id == document_id,
                    Document.state == state,
                    Document.updated_at == updated_at,
                )
                .values(state=DocumentState.QUEUED, reason=None, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount == 1:  # type: ignore[attr-defined]
                claimed.append((document_id, state))
        session.commit()
    for document_id, state in claimed:
        enqueue(document_id, LOWEST if state == DocumentState.QUEUED else HIGHEST)
    if claimed:
        log.warning("stuck_documents_requeued", count=len(claimed))
    return [document_id for document_id, _ in claimed]


class Reaper:
    """Runs :func:`requeue_stuck` every ``interval_s`` on a daemon thread until stopped."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        older_than_s: float,
        interval_s: float,
        enqueue: Enqueue,
    ) -> None:
        self._sessions = sessions
        self._older_than_s = older_than_s
        self._interval_s = interval_s
        self._enqueue = enqueue
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="shoal-reaper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                requeue_stuck(
                    self._sessions, older_than_s=self._older_than_s, enqueue=self._enqueue
                )
            except SQLAlchemyError as exc:  # the database is down: try again next round
                log.warning("reaper_round_failed", error=str(exc))
            except Exception:  # publishing failed (broker down): next round retries
                log.exception("reaper_round_failed")
