"""generation lineage: how each genre was asked for (kind, parent generation, condition)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-20 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable: rows from before lineage have none, and count as "new".
    with op.batch_alter_table("generations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lineage_kind", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("lineage_parent_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("lineage_text", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("generations", schema=None) as batch_op:
        batch_op.drop_column("lineage_text")
        batch_op.drop_column("lineage_parent_id")
        batch_op.drop_column("lineage_kind")
