"""Generated genres in the store: what was issued before (to avoid it) and recording new ones.

A generated genre is a :class:`~bot.store.models.Genre` with origin ``generated`` plus one
:class:`~bot.store.models.Generation` row per delivery. Scope: ``guild_id`` None is the CLI; the
bot passes its guild.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select

from bot.store.engine import SessionMaker
from bot.store.models import ORIGIN_GENERATED, ORIGIN_TRAINING, Generation, Genre, Vote
from scraping.normalize import clean_name, genre_key


async def generated_names(
    sessions: SessionMaker, *, guild_id: int | None = None, any_scope: bool = True
) -> list[str]:
    """Display names of genres generated before: in every scope, or only in ``guild_id``'s."""
    async with sessions.begin() as session:
        query = select(Genre.display_name).where(Genre.origin == ORIGIN_GENERATED)
        if not any_scope:
            scope = (
                Generation.guild_id.is_(None)
                if guild_id is None
                else Generation.guild_id == guild_id
            )
            query = query.join(Generation, Generation.genre_id == Genre.id).where(scope).distinct()
        return list((await session.scalars(query)).all())


async def training_names(sessions: SessionMaker) -> list[str]:
    """Display names of every real (training-origin) genre in the store."""
    async with sessions.begin() as session:
        query = select(Genre.display_name).where(Genre.origin == ORIGIN_TRAINING)
        return list((await session.scalars(query)).all())


async def record_generations(
    sessions: SessionMaker,
    names: Sequence[str],
    *,
    model_name: str | None = None,
    options: dict[str, Any] | None = None,
    guild_id: int | None = None,
    channel_id: int | None = None,
    user_id: int | None = None,
) -> list[int]:
    """Store each name as a generated genre (if new) with one Generation row; return their ids.

    A name whose key is already a genre reuses that genre row. One transaction for all names.
    """
    ids: list[int] = []
    async with sessions.begin() as session:
        for name in names:
            display = clean_name(name)
            key = genre_key(display)
            if not key:
                continue
            genre = await session.scalar(select(Genre).where(Genre.name == key))
            if genre is None:
                genre = Genre(name=key, display_name=display, origin=ORIGIN_GENERATED)
                session.add(genre)
                await session.flush()
            generation = Generation(
                genre_id=genre.id,
                guild_id=guild_id,
                channel_id=channel_id,
                user_id=user_id,
                model_name=model_name,
                options=dict(options or {}),
            )
            session.add(generation)
            await session.flush()
            ids.append(generation.id)
    return ids


async def well_voted_generated(sessions: SessionMaker, min_score: int) -> list[str]:
    """Generated genres whose votes (summed over all their generations) reach ``min_score``."""
    async with sessions.begin() as session:
        score = func.coalesce(func.sum(Vote.value), 0)
        query = (
            select(Genre.display_name)
            .join(Generation, Generation.genre_id == Genre.id)
            .join(Vote, Vote.generation_id == Generation.id)
            .where(Genre.origin == ORIGIN_GENERATED)
            .group_by(Genre.id, Genre.display_name)
            .having(score >= min_score)
            .order_by(Genre.display_name)
        )
        return list((await session.scalars(query)).all())
