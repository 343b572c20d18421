"""genre of the day: each server's schedule, and one post per server and UTC day

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-20 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "daily_schedules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=False),
        sa.Column("channel_id", sa.BigInteger(), nullable=False),
        sa.Column("hour", sa.SmallInteger(), nullable=False),
        sa.Column("set_by", sa.BigInteger(), nullable=True),
        sa.Column("set_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("problem", sa.Text(), nullable=True),
        sa.Column("problem_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("retry_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("hour >= 0 AND hour <= 23", name=op.f("ck_daily_schedules_hour")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_daily_schedules")),
        sa.UniqueConstraint("guild_id", name=op.f("uq_daily_schedules_guild_id")),
    )
    # The unique key on (guild_id, day) is the rule "one post per server per day".
    op.create_table(
        "daily_posts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("claimed_by", sa.String(length=100), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("channel_id", sa.BigInteger(), nullable=True),
        sa.Column("message_id", sa.BigInteger(), nullable=True),
        sa.Column("generation_id", sa.Integer(), nullable=True),
        sa.Column("posted_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["generation_id"],
            ["generations.id"],
            name=op.f("fk_daily_posts_generation_id_generations"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_daily_posts")),
        sa.UniqueConstraint("guild_id", "day", name=op.f("uq_daily_posts_guild_id_day")),
    )


def downgrade() -> None:
    # The schedules and the record of past posts go with the feature.
    op.drop_table("daily_posts")
    op.drop_table("daily_schedules")
