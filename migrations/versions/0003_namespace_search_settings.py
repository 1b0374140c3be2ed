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
    # Per-namespace overrides of the server's search defaults; {} means none.
    with op.batch_alter_table("namespaces", schema=None) as batch_op:
        batch_op.add_column(sa.Column("search", sa.JSON(), nullable=True))
    op.execute("UPDATE namespaces SET search = '{}'")
    with op.batch_alter_table("namespaces", schema=None) as batch_op:
        batch_op.alter_column("search", existing_type=sa.JSON(), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("namespaces", schema=None) as batch_op:
        batch_op.drop_column("search")
