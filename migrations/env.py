"""Alembic environment: the database URL comes from the caller's config, or from settings."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, text

from app.db.models import Base
from app.db.session import make_engine

config = context.config
_LOCK_KEY = 0x5E0A1  # any constant shared by every Shoal process


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from app.settings import get_settings

    return get_settings().resolved_database_url


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(_url())
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=True,  # SQLite can only ALTER tables by copying them
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Replicas and workers starting together upgrade one at a time; the others then
            # find the schema current. The lock ends with the transaction.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        context.run_migrations()


run_migrations_online()
