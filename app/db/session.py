"""Engines and sessions for SQLite (embedded) and Postgres (distributed)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker


def normalise_database_url(url: str) -> str:
    """Accept the plain ``postgresql://`` URLs operators paste, and use the psycopg 3 driver."""
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets foreign keys, WAL and a busy timeout."""
    url = normalise_database_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _configure_sqlite)
        event.listen(engine, "begin", _begin_immediate)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


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
