"""Read-only queries behind `/genre top`, `/genre favorites`, `/genre stats`, `/genre map` and
the selection of community genres for retraining."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, func, or_, select

from bot.lineage import KINDS, NEW
from bot.store.engine import SessionMaker
from bot.store.models import (
    Favorite,
    Generation,
    Genre,
    GenreSource,
    Vote,
    utcnow,
)

PERIODS: dict[str, timedelta | None] = {
    "day": timedelta(days=1),
    "week": timedelta(days=7),
    "month": timedelta(days=30),
    "all": None,
}


@dataclass(frozen=True)
class Ranked:
    """One row of a leaderboard or favorites list."""

    generation_id: int
    name: str
    user_id: int | None
    channel_id: int | None
    message_id: int | None
    created_at: datetime
    upvotes: int
    downvotes: int
    favorites: int

    @property
    def score(self) -> int:
        return self.upvotes - self.downvotes


def _vote_columns() -> tuple[Any, Any]:
    up = func.coalesce(func.sum(case((Vote.value > 0, 1), else_=0)), 0)
    down = func.coalesce(func.sum(case((Vote.value < 0, 1), else_=0)), 0)
    return up, down


async def top_generations(
    sessions: SessionMaker,
    guild_id: int,
    *,
    period: str = "week",
    limit: int = 10,
    now: datetime | None = None,
    kind: str | None = None,
) -> list[Ranked]:
    """This guild's genres issued within ``period`` (and of lineage ``kind``, if given; rows
    from before lineage are ``new``), best net score first.

    Ties go to more upvotes, then to the earlier genre. Genres nobody voted on are included
    (score 0) so a fresh server still sees a list.
    """
    if period not in PERIODS:
        raise ValueError(f"unknown period {period!r}")
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown lineage kind {kind!r}")
    span = PERIODS[period]
    up, down = _vote_columns()
    fav_counts = (
        select(Favorite.generation_id, func.count().label("n"))
        .group_by(Favorite.generation_id)
        .subquery()
    )
    stmt = (
        select(
            Generation.id,
            Genre.display_name,
            Generation.user_id,
            Generation.channel_id,
            Generation.message_id,
            Generation.created_at,
            up.label("up"),
            down.label("down"),
            func.coalesce(func.max(fav_counts.c.n), 0).label("favs"),
        )
        .join(Genre, Genre.id == Generation.genre_id)
        .outerjoin(Vote, Vote.generation_id == Generation.id)
        .outerjoin(fav_counts, fav_counts.c.generation_id == Generation.id)
        .where(Generation.guild_id == guild_id, Generation.message_id.is_not(None))
        .group_by(Generation.id, Genre.display_name)
        .order_by((up - down).desc(), up.desc(), Generation.created_at, Generation.id)
        .limit(limit)
    )
    if span is not None:
        stmt = stmt.where(Generation.created_at >= (now or utcnow()) - span)
    if kind == NEW:
        stmt = stmt.where(or_(Generation.lineage_kind == NEW, Generation.lineage_kind.is_(None)))
    elif kind is not None:
        stmt = stmt.where(Generation.lineage_kind == kind)
    async with sessions.begin() as session:
        rows = (await session.execute(stmt)).all()
    return [
        Ranked(r[0], r[1], r[2], r[3], r[4], r[5], int(r[6]), int(r[7]), int(r[8])) for r in rows
    ]


async def user_favorites(
    sessions: SessionMaker, guild_id: int, user_id: int, *, limit: int = 25
) -> list[Ranked]:
    """Genres of this guild that ``user_id`` starred, newest star first."""
    up, down = _vote_columns()
    starred = (
        select(Favorite.generation_id, Favorite.created_at)
        .where(Favorite.user_id == user_id)
        .subquery()
    )
    stmt = (
        select(
            Generation.id,
            Genre.display_name,
            Generation.user_id,
            Generation.channel_id,
            Generation.message_id,
            Generation.created_at,
            up,
            down,
            func.max(starred.c.created_at).label("starred_at"),
        )
        .join(starred, starred.c.generation_id == Generation.id)
        .join(Genre, Genre.id == Generation.genre_id)
        .outerjoin(Vote, Vote.generation_id == Generation.id)
        .where(Generation.guild_id == guild_id)
        .group_by(Generation.id, Genre.display_name)
        .order_by(func.max(starred.c.created_at).desc(), Generation.id.desc())
        .limit(limit)
    )
    async with sessions.begin() as session:
        rows = (await session.execute(stmt)).all()
    return [Ranked(r[0], r[1], r[2], r[3], r[4], r[5], int(r[6]), int(r[7]), 1) for r in rows]


async def guild_counts(sessions: SessionMaker, guild_id: int) -> dict[str, int]:
    """Genres issued, votes and favorites in one guild."""
    async with sessions.begin() as session:
        genres = await session.scalar(
            select(func.count()).select_from(Generation).where(Generation.guild_id == guild_id)
        )
        votes = await session.scalar(
            select(func.count())
            .select_from(Vote)
            .join(Generation, Generation.id == Vote.generation_id)
            .where(Generation.guild_id == guild_id)
        )
        favorites = await session.scalar(
            select(func.count())
            .select_from(Favorite)
            .join(Generation, Generation.id == Favorite.generation_id)
            .where(Generation.guild_id == guild_id)
        )
    return {"genres": int(genres or 0), "votes": int(votes or 0), "favorites": int(favorites or 0)}


async def guild_genre_names(
    sessions: SessionMaker, guild_id: int, *, limit: int = 200
) -> list[str]:
    """This guild's generated genres, newest first."""
    async with sessions.begin() as session:
        rows = await session.scalars(
            select(Genre.display_name)
            .join(Generation, Generation.genre_id == Genre.id)
            .where(Generation.guild_id == guild_id, Generation.message_id.is_not(None))
            .order_by(Generation.created_at.desc(), Generation.id.desc())
            .limit(limit)
        )
        return list(rows.all())


async def map_positions(sessions: SessionMaker) -> dict[str, tuple[float, float]]:
    """Every Noise map position (x = left px, y = top px) of every real genre that has one."""
    async with sessions.begin() as session:
        rows = (
            await session.execute(
                select(Genre.display_name, GenreSource.extra)
                .join(GenreSource, GenreSource.genre_id == Genre.id)
                .where(GenreSource.source == "everynoise")
            )
        ).all()
    positions: dict[str, tuple[float, float]] = {}
    for name, extra in rows:
        x, y = (extra or {}).get("x"), (extra or {}).get("y")
        if isinstance(x, int | float) and isinstance(y, int | float):
            positions[str(name)] = (float(x), float(y))
    return positions
