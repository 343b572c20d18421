"""SQLAlchemy models of the store: genres, generations, votes, favorites, model versions, runs,
the genre of the day.

Changing a model needs a migration: ``alembic revision --autogenerate`` (see docs/operations.md).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy import text as sql_text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ORIGIN_TRAINING = "training"
ORIGIN_GENERATED = "generated"

RUN_PENDING = "pending"  # queued: waits for the machine's one training slot
RUN_RUNNING = "running"
RUN_SUCCEEDED = "succeeded"
RUN_REJECTED = "rejected"  # trained, but failed the quality gate
RUN_FAILED = "failed"
RUN_CANCELLED = "cancelled"
RUN_ACTIVE_STATES = (RUN_PENDING, RUN_RUNNING)
# The condition of the partial index that allows one open run per server (SQL).
OPEN_RUN = "status IN ('pending', 'running')"


def utcnow() -> datetime:
    return datetime.now(UTC)


def expression_indexes(table_name: str) -> list[Index]:
    """Fresh copies of the indexes on expressions (not plain columns) declared for
    ``table_name``.

    SQLite cannot reflect them, so an Alembic batch operation that rebuilds the table would
    drop them silently: a migration that rebuilds such a table passes these as
    ``op.batch_alter_table(table_name, reflect_args=expression_indexes(table_name))``.
    """
    table = Base.metadata.tables[table_name]
    return [
        Index(index.name, *index.expressions, unique=index.unique, **index.kwargs)
        for index in table.indexes
        if not all(isinstance(e, Column) for e in index.expressions)
    ]


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSON,
        datetime: DateTime(timezone=True),
    }


class Genre(Base):
    """A genre name, real (origin ``training``) or invented (origin ``generated``)."""

    __tablename__ = "genres"
    __table_args__ = (CheckConstraint("origin IN ('training', 'generated')", name="origin"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Normalised key (see scraping.normalize.genre_key): unique across origins.
    name: Mapped[str] = mapped_column(String(200), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    origin: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    sources: Mapped[list[GenreSource]] = relationship(
        back_populates="genre", cascade="all, delete-orphan", lazy="raise"
    )


class GenreSource(Base):
    """Provenance: one row per (genre, source) with what that source says about it."""

    __tablename__ = "genre_sources"
    __table_args__ = (UniqueConstraint("genre_id", "source"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    genre_id: Mapped[int] = mapped_column(ForeignKey("genres.id", ondelete="CASCADE"), index=True)
    source: Mapped[str] = mapped_column(String(32), index=True)
    # The source's own spelling of the name.
    source_name: Mapped[str] = mapped_column(String(200))
    url: Mapped[str | None] = mapped_column(Text, default=None)
    # Everything else the source offers (map position, colour, rank, parents, similar, ids).
    extra: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    genre: Mapped[Genre] = relationship(back_populates="sources", lazy="raise")


class ModelVersion(Base):
    """A trained adapter the worker can serve, of one server (``guild_id``) or of the whole
    deployment (``guild_id`` NULL: the default every server without its own model uses).

    At most one version is active per ``guild_id`` (NULL included). ``previous_id`` is what was
    active for that scope when this one was activated (NULL: the default), so a rollback can
    return to it.
    """

    __tablename__ = "model_versions"
    __table_args__ = (
        Index(
            "uq_model_versions_active_scope",
            func.coalesce(sql_text("guild_id"), 0),
            unique=True,
            sqlite_where=sql_text("active"),
            postgresql_where=sql_text("active"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    path: Mapped[str] = mapped_column(Text)
    base_model: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    active: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    guild_id: Mapped[int | None] = mapped_column(BigInteger, index=True, default=None)
    activated_at: Mapped[datetime | None] = mapped_column(default=None)
    previous_id: Mapped[int | None] = mapped_column(Integer, default=None)


class Generation(Base):
    """One delivery of a generated genre (to a Discord message, or the CLI)."""

    __tablename__ = "generations"
    # A genre is issued at most once per guild (CLI generations have guild_id NULL).
    __table_args__ = (UniqueConstraint("guild_id", "genre_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    genre_id: Mapped[int] = mapped_column(ForeignKey("genres.id", ondelete="CASCADE"), index=True)
    # Discord ids are 64-bit; all three are NULL for generations from the CLI.
    guild_id: Mapped[int | None] = mapped_column(BigInteger, index=True, default=None)
    channel_id: Mapped[int | None] = mapped_column(BigInteger, default=None)
    message_id: Mapped[int | None] = mapped_column(BigInteger, unique=True, default=None)
    user_id: Mapped[int | None] = mapped_column(BigInteger, default=None)
    model_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_versions.id", ondelete="SET NULL"), default=None
    )
    model_name: Mapped[str | None] = mapped_column(String(100), default=None)
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    # How it was asked for (bot/lineage.py): the kind (NULL: from before lineage, "new"), the
    # generation it varies (a plain id, so a deleted source leaves the record), the condition.
    lineage_kind: Mapped[str | None] = mapped_column(String(16), default=None)
    lineage_parent_id: Mapped[int | None] = mapped_column(Integer, default=None)
    lineage_text: Mapped[str | None] = mapped_column(Text, default=None)

    genre: Mapped[Genre] = relationship(lazy="raise")


class Vote(Base):
    """A user's 👍 (+1) or 👎 (-1) on a generation: one row per (generation, user)."""

    __tablename__ = "votes"
    __table_args__ = (
        UniqueConstraint("generation_id", "user_id"),
        CheckConstraint("value IN (-1, 1)", name="value"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    generation_id: Mapped[int] = mapped_column(
        ForeignKey("generations.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[int] = mapped_column(BigInteger)
    value: Mapped[int] = mapped_column(SmallInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Favorite(Base):
    """A user's ⭐ on a generation."""

    __tablename__ = "favorites"
    __table_args__ = (UniqueConstraint("generation_id", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    generation_id: Mapped[int] = mapped_column(
        ForeignKey("generations.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[int] = mapped_column(BigInteger, index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TrainingRun(Base):
    """A retraining requested from Discord or the CLI."""

    __tablename__ = "training_runs"
    # At most one queued or running run per server, and one of the CLI (guild_id NULL,
    # counted as 0 here): the database refuses a second one, however the requests race.
    __table_args__ = (
        Index(
            "uq_training_runs_open_scope",
            func.coalesce(sql_text("guild_id"), 0),
            unique=True,
            sqlite_where=sql_text(OPEN_RUN),
            postgresql_where=sql_text(OPEN_RUN),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default=RUN_PENDING, index=True)
    requested_by: Mapped[int | None] = mapped_column(BigInteger, default=None)
    guild_id: Mapped[int | None] = mapped_column(BigInteger, index=True, default=None)
    channel_id: Mapped[int | None] = mapped_column(BigInteger, default=None)
    message_id: Mapped[int | None] = mapped_column(BigInteger, default=None)
    # queued, training, evaluating, activating, finished (the status says how it ended).
    phase: Mapped[str] = mapped_column(String(16), default="queued")
    # Set by a cancel from any process; the process running the run stops it.
    cancel_reason: Mapped[str | None] = mapped_column(Text, default=None)
    # 0.0 .. 1.0, with the step and loss the trainer last reported.
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int] = mapped_column(Integer, default=0)
    loss: Mapped[float | None] = mapped_column(Float, default=None)
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)
    model_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_versions.id", ondelete="SET NULL"), default=None
    )
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class RetrainLease(Base):
    """The machine's one training slot: the process running a run holds it until
    ``lease_until`` and renews it while the run goes on; a holder that dies lets it expire."""

    __tablename__ = "retrain_leases"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(100), default=None)
    run_id: Mapped[int | None] = mapped_column(Integer, default=None)
    lease_until: Mapped[datetime | None] = mapped_column(default=None)


class DailySchedule(Base):
    """A server's genre of the day: the channel and UTC hour it is posted at, since when
    (``set_at``), and the last problem that kept it from being posted, with the time of the
    next try (``retry_at``; cleared by a post or a new schedule)."""

    __tablename__ = "daily_schedules"
    __table_args__ = (CheckConstraint("hour >= 0 AND hour <= 23", name="hour"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    guild_id: Mapped[int] = mapped_column(BigInteger, unique=True)
    channel_id: Mapped[int] = mapped_column(BigInteger)
    hour: Mapped[int] = mapped_column(SmallInteger)
    set_by: Mapped[int | None] = mapped_column(BigInteger, default=None)
    set_at: Mapped[datetime] = mapped_column(default=utcnow)
    problem: Mapped[str | None] = mapped_column(Text, default=None)
    problem_at: Mapped[datetime | None] = mapped_column(default=None)
    retry_at: Mapped[datetime | None] = mapped_column(default=None)


class DailyPost(Base):
    """One server's genre of the day on one UTC day. The unique key is the rule "one post per
    server per day": a process claims the day by inserting the row, then generates and posts,
    then records the message. ``claimed_at`` is on the database's clock."""

    __tablename__ = "daily_posts"
    __table_args__ = (UniqueConstraint("guild_id", "day"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    guild_id: Mapped[int] = mapped_column(BigInteger)
    day: Mapped[date] = mapped_column(Date)
    claimed_by: Mapped[str] = mapped_column(String(100))
    claimed_at: Mapped[datetime] = mapped_column(default=utcnow)
    channel_id: Mapped[int | None] = mapped_column(BigInteger, default=None)
    message_id: Mapped[int | None] = mapped_column(BigInteger, default=None)
    generation_id: Mapped[int | None] = mapped_column(
        ForeignKey("generations.id", ondelete="SET NULL"), default=None
    )
    posted_at: Mapped[datetime | None] = mapped_column(default=None)
