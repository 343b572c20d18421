"""one open run per server: a partial unique index on training_runs

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-15 10:00:00
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN_SCOPE = "uq_training_runs_open_scope"
OPEN_RUN = "status IN ('pending', 'running')"
DUPLICATE = "cancelled by the schema upgrade: this server had another run queued or running"


def upgrade() -> None:
    # Before the index, a race could queue several runs of one server: keep the running one
    # (else the oldest) and cancel the others, which would break the index.
    runs = sa.table(
        "training_runs",
        sa.column("id", sa.Integer()),
        sa.column("guild_id", sa.BigInteger()),
        sa.column("status", sa.String()),
        sa.column("phase", sa.String()),
        sa.column("error", sa.Text()),
        sa.column("finished_at", sa.DateTime(timezone=True)),
    )
    other = runs.alias("other")

    def rank(t: sa.TableClause) -> sa.ColumnElement[int]:
        return sa.case((t.c.status == "running", 0), else_=1)

    kept_before = sa.exists().where(
        sa.func.coalesce(other.c.guild_id, 0) == sa.func.coalesce(runs.c.guild_id, 0),
        other.c.status.in_(("pending", "running")),
        sa.or_(
            rank(other) < rank(runs),
            sa.and_(rank(other) == rank(runs), other.c.id < runs.c.id),
        ),
    )
    op.execute(
        runs.update()
        .where(runs.c.status.in_(("pending", "running")), kept_before)
        .values(
            status="cancelled", phase="finished", error=DUPLICATE, finished_at=datetime.now(UTC)
        )
    )
    op.create_index(
        OPEN_SCOPE,
        "training_runs",
        [sa.text("coalesce(guild_id, 0)")],
        unique=True,
        sqlite_where=sa.text(OPEN_RUN),
        postgresql_where=sa.text(OPEN_RUN),
    )


def downgrade() -> None:
    op.drop_index(OPEN_SCOPE, table_name="training_runs")
