"""per-server models: model versions of a guild, activation history, the retraining queue

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-10 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op
from alembic.util import CommandError

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTIVE_SCOPE = "uq_model_versions_active_scope"


def upgrade() -> None:
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("guild_id", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("activated_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("previous_id", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_model_versions_guild_id"), ["guild_id"], unique=False)
    # One active version per server, and one default (guild_id NULL counts as 0 here).
    op.create_index(
        ACTIVE_SCOPE,
        "model_versions",
        [sa.text("coalesce(guild_id, 0)")],
        unique=True,
        sqlite_where=sa.text("active"),
        postgresql_where=sa.text("active"),
    )
    with op.batch_alter_table("training_runs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("phase", sa.String(length=16), nullable=False, server_default="queued")
        )
        batch_op.add_column(sa.Column("cancel_reason", sa.Text(), nullable=True))
        batch_op.create_index(batch_op.f("ix_training_runs_guild_id"), ["guild_id"], unique=False)
    op.create_table(
        "retrain_leases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("holder", sa.String(length=100), nullable=True),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_retrain_leases")),
    )
    op.execute("INSERT INTO retrain_leases (id) VALUES (1)")


def downgrade() -> None:
    _refuse_while_servers_have_models()
    op.drop_table("retrain_leases")
    with op.batch_alter_table("training_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_training_runs_guild_id"))
        batch_op.drop_column("cancel_reason")
        batch_op.drop_column("phase")
    op.drop_index(ACTIVE_SCOPE, table_name="model_versions")
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_model_versions_guild_id"))
        batch_op.drop_column("previous_id")
        batch_op.drop_column("activated_at")
        batch_op.drop_column("guild_id")


def _refuse_while_servers_have_models() -> None:
    """Revision 0001 cannot tell a server's model from the deployment's default: a server's
    active model would become everybody's default (two would break the upgrade back)."""
    if context.is_offline_mode():
        return
    servers = op.get_bind().scalar(
        sa.text("SELECT count(DISTINCT guild_id) FROM model_versions WHERE guild_id IS NOT NULL")
    )
    if servers:
        have = "server has models of its own" if servers == 1 else "servers have models of their own"
        raise CommandError(
            f"refusing to downgrade below revision 0002: {servers} {have} "
            "(model_versions.guild_id), which the older schema cannot tell from the default; "
            "nothing was changed. Stay on this revision, or back up the database and delete "
            "those versions first (`microgenre model list` shows them)."
        )
