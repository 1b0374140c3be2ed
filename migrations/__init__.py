"""Alembic migrations; run them with ``shoal db upgrade`` (``shoal serve`` does it on start)."""
