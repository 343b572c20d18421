"""Votes (👍 +1 / 👎 -1) and favorites (⭐) from reaction events.

The voting cog works out a user's vote from the reactions the message shows and stores it
with :func:`put_vote`; after downtime, :func:`put_reactions` makes a user's vote and favorite
what Discord shows, and :func:`reactors` lists who had one. Every function is idempotent, so a
duplicated or replayed gateway event never double-counts: a vote is an upsert on
``(generation_id, user_id)``, and :func:`remove_vote` only deletes the vote when it still has
that reaction's value.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite

from bot.store.engine import SessionMaker
from bot.store.models import Favorite, Vote, utcnow


def _insert(session: Any, table: Any) -> Any:
    """The dialect's INSERT with ON CONFLICT support (SQLite and PostgreSQL)."""
    if session.bind.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


async def set_vote(sessions: SessionMaker, generation_id: int, user_id: int, value: int) -> bool:
    """Record ``user_id``'s vote; returns True when something changed."""
    if value not in (-1, 1):
        raise ValueError("a vote is -1 or +1")
    async with sessions.begin() as session:
        current = await session.scalar(
            select(Vote.value).where(Vote.generation_id == generation_id, Vote.user_id == user_id)
        )
        if current == value:
            return False
        stmt = _insert(session, Vote).values(
            generation_id=generation_id, user_id=user_id, value=value
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["generation_id", "user_id"],
            set_={"value": value, "updated_at": utcnow()},
        )
        await session.execute(stmt)
        return True


async def remove_vote(sessions: SessionMaker, generation_id: int, user_id: int, value: int) -> bool:
    """Withdraw the vote if it still has ``value``; returns True when a row was deleted."""
    async with sessions.begin() as session:
        result = await session.execute(
            delete(Vote).where(
                Vote.generation_id == generation_id, Vote.user_id == user_id, Vote.value == value
            )
        )
        return bool(getattr(result, "rowcount", 0))


async def get_vote(sessions: SessionMaker, generation_id: int, user_id: int) -> int | None:
    """``user_id``'s stored vote on the generation: +1, -1 or None."""
    async with sessions.begin() as session:
        value = await session.scalar(
            select(Vote.value).where(Vote.generation_id == generation_id, Vote.user_id == user_id)
        )
    return None if value is None else int(value)


async def put_vote(
    sessions: SessionMaker, generation_id: int, user_id: int, value: int | None
) -> bool:
    """Make ``user_id``'s vote exactly ``value`` (None: no vote); returns True when it changed."""
    if value is not None:
        return await set_vote(sessions, generation_id, user_id, value)
    async with sessions.begin() as session:
        result = await session.execute(
            delete(Vote).where(Vote.generation_id == generation_id, Vote.user_id == user_id)
        )
        return bool(getattr(result, "rowcount", 0))


async def add_favorite(sessions: SessionMaker, generation_id: int, user_id: int) -> bool:
    async with sessions.begin() as session:
        stmt = _insert(session, Favorite).values(generation_id=generation_id, user_id=user_id)
        result = await session.execute(
            stmt.on_conflict_do_nothing(index_elements=["generation_id", "user_id"])
        )
        return bool(getattr(result, "rowcount", 0))


async def remove_favorite(sessions: SessionMaker, generation_id: int, user_id: int) -> bool:
    async with sessions.begin() as session:
        result = await session.execute(
            delete(Favorite).where(
                Favorite.generation_id == generation_id, Favorite.user_id == user_id
            )
        )
        return bool(getattr(result, "rowcount", 0))


async def reactors(sessions: SessionMaker, generation_id: int) -> set[int]:
    """The users with a vote or a favorite on the generation."""
    async with sessions.begin() as session:
        voters = await session.scalars(
            select(Vote.user_id).where(Vote.generation_id == generation_id)
        )
        starred = await session.scalars(
            select(Favorite.user_id).where(Favorite.generation_id == generation_id)
        )
        return {int(u) for u in voters.all()} | {int(u) for u in starred.all()}


async def put_reactions(
    sessions: SessionMaker, generation_id: int, user_id: int, *, vote: int | None, favorite: bool
) -> bool:
    """Make ``user_id``'s vote exactly ``vote`` (None: no vote) and their favorite exactly
    ``favorite``, in one transaction; returns True when something changed."""
    if vote not in (None, -1, 1):
        raise ValueError("a vote is -1 or +1")
    mine = (Vote.generation_id == generation_id, Vote.user_id == user_id)
    starred = (Favorite.generation_id == generation_id, Favorite.user_id == user_id)
    changed = False
    async with sessions.begin() as session:
        current = await session.scalar(select(Vote.value).where(*mine))
        if current != vote:
            changed = True
            if vote is None:
                await session.execute(delete(Vote).where(*mine))
            else:
                stmt = _insert(session, Vote).values(
                    generation_id=generation_id, user_id=user_id, value=vote
                )
                await session.execute(
                    stmt.on_conflict_do_update(
                        index_elements=["generation_id", "user_id"],
                        set_={"value": vote, "updated_at": utcnow()},
                    )
                )
        has_favorite = await session.scalar(select(Favorite.id).where(*starred)) is not None
        if has_favorite != favorite:
            changed = True
            if favorite:
                stmt = _insert(session, Favorite).values(
                    generation_id=generation_id, user_id=user_id
                )
                await session.execute(
                    stmt.on_conflict_do_nothing(index_elements=["generation_id", "user_id"])
                )
            else:
                await session.execute(delete(Favorite).where(*starred))
    return changed


async def tally(sessions: SessionMaker, generation_id: int) -> dict[str, int]:
    """``{"up", "down", "score", "favorites"}`` of one generation."""
    async with sessions.begin() as session:
        result = await session.execute(
            select(Vote.value, func.count())
            .where(Vote.generation_id == generation_id)
            .group_by(Vote.value)
        )
        rows = {int(value): int(n) for value, n in result.all()}
        favorites = await session.scalar(
            select(func.count())
            .select_from(Favorite)
            .where(Favorite.generation_id == generation_id)
        )
    up, down = int(rows.get(1, 0)), int(rows.get(-1, 0))
    return {"up": up, "down": down, "score": up - down, "favorites": int(favorites or 0)}
