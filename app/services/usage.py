"""Per tenant, key and UTC day: requests and tokens, for admins and billing, and the requests
the rate limits refused (429s), for admins to see when a budget is too tight.

Requests add to a :class:`UsageLedger` in memory, which a background thread writes to the
database once a second: one atomic increment per (tenant, key, day) per flush, off the request
path (a write and a commit per request cost each query about a millisecond and a trip to the
database's write lock). Reading usage flushes this process's ledger first; other replicas'
latest second arrives with their next flush. The rate limits do not depend on these rows: they
keep their own count (:mod:`app.services.limits`).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter
from collections.abc import Callable

import structlog
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from app.db.models import Usage

log = structlog.get_logger(__name__)

# (tenant_id, key_id, day) -> (requests, prompt_tokens, completion_tokens)
_Row = tuple[str, str, dt.date]


def record_usage(
    session: Session,
    *,
    tenant_id: str,
    key_id: str,
    day: dt.date | None = None,
    requests: int = 1,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    rejected: int = 0,
) -> None:
    """Add requests, tokens and rejections to the day's row for (tenant, key); the caller
    commits.

    An atomic ``UPDATE ... SET n = n + k`` first; the row is inserted only the first time each
    day, and a racing insert falls back to the update, so concurrent writers never lose counts.
    A tenant or key deleted meanwhile has no row to add to: its counts are dropped.
    """
    day = day or dt.datetime.now(dt.UTC).date()
    key = (Usage.tenant_id == tenant_id, Usage.key_id == key_id, Usage.day == day)
    increment = (
        update(Usage)
        .where(*key)
        .values(
            requests=Usage.requests + requests,
            prompt_tokens=Usage.prompt_tokens + prompt_tokens,
            completion_tokens=Usage.completion_tokens + completion_tokens,
            rejected=Usage.rejected + rejected,
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
                        requests=requests,
                        prompt_tokens=prompt_tokens,
                        completion_tokens=completion_tokens,
                        rejected=rejected,
                    )
                )
        except IntegrityError:
            session.execute(increment)


class UsageLedger:
    """Usage counted in memory, written to the database in batches (module docstring).

    A flush that fails (the database is down) keeps its counts for the next one, so an outage
    delays usage rows but loses none; a process that dies loses at most its last second.
    """

    def __init__(self, sessions: Callable[[], Session], *, interval_s: float = 1.0) -> None:
        self._sessions = sessions
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._pending: dict[_Row, Counter[str]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(
        self,
        *,
        tenant_id: str,
        key_id: str,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
    ) -> None:
        """Count one request and its tokens (today, UTC)."""
        row = (tenant_id, key_id, dt.datetime.now(dt.UTC).date())
        with self._lock:
            counts = self._pending.setdefault(row, Counter())
            counts["requests"] += 1
            counts["prompt_tokens"] += prompt_tokens
            counts["completion_tokens"] += completion_tokens

    def reject(self, *, tenant_id: str, key_id: str) -> None:
        """Count one request the rate limits refused (today, UTC); it is not a request."""
        row = (tenant_id, key_id, dt.datetime.now(dt.UTC).date())
        with self._lock:
            self._pending.setdefault(row, Counter())["rejected"] += 1

    def flush(self) -> None:
        """Write what is pending, in one transaction.

        Raises:
            SQLAlchemyError: the database failed; the counts stay pending (as on any error).
        """
        with self._flush_lock:
            with self._lock:
                taken, self._pending = self._pending, {}
            if not taken:
                return
            try:
                with self._sessions() as session:
                    for (tenant_id, key_id, day), counts in taken.items():
                        record_usage(
                            session,
                            tenant_id=tenant_id,
                            key_id=key_id,
                            day=day,
                            requests=counts["requests"],
                            prompt_tokens=counts["prompt_tokens"],
                            completion_tokens=counts["completion_tokens"],
                            rejected=counts["rejected"],
                        )
                    session.commit()
            except BaseException:  # the database, or anything else: keep the counts
                with self._lock:
                    for row, counts in taken.items():
                        self._pending.setdefault(row, Counter()).update(counts)
                raise

    def start(self) -> None:
        """Flush every ``interval_s`` in a daemon thread until :meth:`close`."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="shoal-usage", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.flush()
            except SQLAlchemyError as exc:
                log.warning("usage_flush_failed", error=str(exc))
            except Exception:  # a bug must not stop usage from ever being written again
                log.exception("usage_flush_failed")

    def close(self) -> None:
        """Stop the thread and write what is left (best effort: the database may be gone)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self.flush()
        except SQLAlchemyError as exc:
            log.warning("usage_flush_failed", error=str(exc), at="close")


def usage_for_tenant(session: Session, *, tenant_id: str, days: int = 30) -> list[Usage]:
    """Rows of the last ``days`` days, newest first."""
    since = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=days - 1)
    query = select(Usage).where(Usage.tenant_id == tenant_id, Usage.day >= since)
    return list(session.scalars(query.order_by(Usage.day.desc(), Usage.key_id)))
