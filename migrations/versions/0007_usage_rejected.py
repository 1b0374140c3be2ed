"""rate-limit rejections in the usage rows

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-09 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Requests refused with a 429, per tenant, key and day; 0 for every row made before (they
    # were counted only in the metrics). A plain ADD COLUMN with a default, as in 0003.
    op.add_column("usage", sa.Column("rejected", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    op.drop_column("usage", "rejected")
