"""namespace search settings

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 01:15:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Per-namespace overrides of the server's search defaults; '{}' means none. A plain
    # ADD COLUMN with a default, never a batch copy: on SQLite a copy drops and recreates the
    # namespaces table, and the drop would cascade to every document.
    op.add_column(
        "namespaces",
        sa.Column("search", sa.JSON(), nullable=False, server_default=sa.text("'{}'")),
    )


def downgrade() -> None:
    # SQLite has had DROP COLUMN since 3.35; no table copy here either.
    op.drop_column("namespaces", "search")
