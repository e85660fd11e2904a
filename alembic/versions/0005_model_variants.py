"""model variants: int8 (and later) serving variants, and each model's default variant

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("models") as batch_op:
        batch_op.add_column(
            sa.Column(
                "default_variant", sa.String(length=16), nullable=False, server_default="float"
            )
        )
    op.create_table(
        "model_variants",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("model_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("storage_key", sa.String(length=512), nullable=False),
        sa.Column("comparison", sa.JSON(), nullable=False),
        sa.Column("dataset_id", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name="fk_model_variants_model_id"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("model_id", "kind", name="uq_model_variants_model_id_kind"),
    )
    op.create_index("ix_model_variants_model_id", "model_variants", ["model_id"])


def downgrade() -> None:
    op.drop_index("ix_model_variants_model_id", table_name="model_variants")
    op.drop_table("model_variants")
    with op.batch_alter_table("models") as batch_op:
        batch_op.drop_column("default_variant")
