"""jobs remember how many documents they had

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 04:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A job's documents can be replaced by newer versions or deleted later (their job rows go
    # with them); the count taken at upload lets the job say how many went. Plain ADD COLUMN.
    op.add_column("jobs", sa.Column("document_count", sa.Integer(), nullable=True))
    op.execute(
        "UPDATE jobs SET document_count = "
        "(SELECT count(*) FROM job_documents WHERE job_documents.job_id = jobs.id)"
    )


def downgrade() -> None:
    op.drop_column("jobs", "document_count")
