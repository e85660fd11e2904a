"""auto-distill: trial jobs name their parent search; a parent records its phase

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.add_column(sa.Column("parent_job_id", sa.String(32), nullable=True))
        batch_op.add_column(sa.Column("phase", sa.String(16), nullable=True))
        batch_op.create_index("ix_jobs_parent_job_id", ["parent_job_id"])
        batch_op.create_foreign_key("fk_jobs_parent_job_id", "jobs", ["parent_job_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_constraint("fk_jobs_parent_job_id", type_="foreignkey")
        batch_op.drop_index("ix_jobs_parent_job_id")
        batch_op.drop_column("phase")
        batch_op.drop_column("parent_job_id")
