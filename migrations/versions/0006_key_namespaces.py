"""keys limited to some namespaces

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The names of the namespaces a key may use; NULL (every key made before) means all of its
    # tenant's. A plain ADD COLUMN, as in 0003.
    op.add_column("api_keys", sa.Column("namespaces", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("api_keys", "namespaces")
