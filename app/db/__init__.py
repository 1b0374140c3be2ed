"""Metadata storage: SQLAlchemy models, engines and sessions, Alembic upgrades."""
