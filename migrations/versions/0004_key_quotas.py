"""per-key quotas

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 03:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A key's own per-minute budgets, on top of its tenant's; '{}' means none. A plain ADD
    # COLUMN (no batch copy), as in 0003.
    op.add_column(
        "api_keys",
        sa.Column("quotas", sa.JSON(), nullable=False, server_default=sa.text("'{}'")),
    )


def downgrade() -> None:
    op.drop_column("api_keys", "quotas")
