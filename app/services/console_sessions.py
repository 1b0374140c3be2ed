"""Console sessions kept in the database, so that signing out ends a session everywhere.

The console's cookie is signed (:mod:`app.console.session`), but a signature alone cannot be
withdrawn: a copy of the cookie would stay valid until it expires. So each sign-in opens a
row here, the cookie carries its id, every console request checks the row, and sign-out
deletes it. The database is the one store every deployment shares (replicas are stateless,
and Redis is optional), and each console request reads it anyway to look the key up again.

Rows are keyed by the SHA-256 of the id: reading the table opens no session. Expired rows are
purged at each sign-in.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.db.models import ConsoleSessionRecord, utcnow


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def open_session(session: Session, *, key_id: str, ttl_s: int) -> str:
    """Open a session for ``key_id`` lasting ``ttl_s`` seconds and commit; its id (for the
    cookie, never stored as is)."""
    now = utcnow()
    session.execute(delete(ConsoleSessionRecord).where(ConsoleSessionRecord.expires_at < now))
    session_id = secrets.token_urlsafe(32)
    session.add(
        ConsoleSessionRecord(
            id=_digest(session_id),
            key_id=key_id,
            created_at=now,
            expires_at=now + dt.timedelta(seconds=ttl_s),
        )
    )
    session.commit()
    return session_id


def is_open(session: Session, *, session_id: str, key_id: str) -> bool:
    """Whether the session is open, unexpired and ``key_id``'s; the caller ends the read."""
    query = select(ConsoleSessionRecord.key_id, ConsoleSessionRecord.expires_at).where(
        ConsoleSessionRecord.id == _digest(session_id)
    )
    found = session.execute(query).first()
    return found is not None and found.key_id == key_id and found.expires_at > utcnow()


def end_session(session: Session, *, session_id: str) -> None:
    """End the session (nothing if it has ended already) and commit."""
    session.execute(
        delete(ConsoleSessionRecord).where(ConsoleSessionRecord.id == _digest(session_id))
    )
    session.commit()
