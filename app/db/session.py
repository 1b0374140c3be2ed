"""Engines and sessions for SQLite (embedded) and Postgres (distributed)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from app.errors import InvalidRequestError


def normalise_database_url(url: str) -> str:
    """Accept the plain ``postgresql://`` URLs operators paste, and use the psycopg 3 driver."""
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets foreign keys, WAL and a busy timeout.

    On both, a statement with a NUL character in a text parameter raises
    :class:`~app.errors.InvalidRequestError` before it reaches the database.
    """
    url = normalise_database_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _configure_sqlite)
        event.listen(engine, "begin", _begin_immediate)
    else:
        engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
    event.listen(engine, "before_cursor_execute", _refuse_nul)
    return engine


def _refuse_nul(
    _conn: Any, _cursor: Any, _statement: str, parameters: Any, _context: Any, executemany: bool
) -> None:
    # Any: DB-API cursors and parameters are driver-specific.
    # Postgres text cannot hold U+0000 (psycopg refuses it: a 500), SQLite can; refusing it
    # here, for every name, filename, id or lookup, makes both answer the same 422. JSON
    # columns are unaffected: they are serialised first, where NUL is the escape `\u0000`.
    rows = parameters if executemany else [parameters]
    for row in rows:
        values = row.values() if isinstance(row, dict) else row
        if any(isinstance(value, str) and "\x00" in value for value in values or ()):
            raise InvalidRequestError("text cannot contain the NUL character (U+0000)")


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # Any: the DB-API connection is driver-specific.
    # Let SQLAlchemy, not the sqlite3 module, emit BEGIN: savepoints work only then.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")  # cascades are part of the contract
    cursor.execute("PRAGMA journal_mode=WAL")  # readers don't block the indexing writer
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _begin_immediate(conn: Any) -> None:
    # Take the write lock at BEGIN: a deferred transaction that reads and then writes fails at
    # once with "database is locked" when another writer got in between, whereas an immediate
    # one waits on the busy timeout. Reads stay concurrent through WAL outside transactions.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded attributes after commit (services return rows they committed)."""
    return sessionmaker(engine, expire_on_commit=False)
