"""Generated genres in the store: what was issued before (to avoid it) and recording new ones.

A generated genre is a :class:`~bot.store.models.Genre` with origin ``generated`` plus one
:class:`~bot.store.models.Generation` row per delivery. Scope: ``guild_id`` None is the CLI; the
bot passes its guild.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

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

    A name whose key is already a genre reuses that genre row; names without a key are
    skipped. One transaction for all names; the genre rows are looked up and inserted in bulk.
    """
    wanted = _keyed(names)
    async with sessions.begin() as session:
        genre_ids = await _genre_ids(session, wanted)
        generations = [
            Generation(
                genre_id=genre_ids[key],
                guild_id=guild_id,
                channel_id=channel_id,
                user_id=user_id,
                model_name=model_name,
                options=dict(options or {}),
            )
            for _, key in wanted
        ]
        session.add_all(generations)
        await session.flush()
        return [generation.id for generation in generations]


async def record_generations_bulk(
    sessions: SessionMaker,
    names: Sequence[str],
    *,
    model_name: str | None = None,
    options: dict[str, Any] | None = None,
) -> int:
    """:func:`record_generations` in the CLI's scope for many names, in a few statements.

    Returns how many generations were recorded (their ids are not read back: a multi-row
    insert does not say which id belongs to which row).
    """
    wanted = _keyed(names)
    async with sessions.begin() as session:
        genre_ids = await _genre_ids(session, wanted)
        rows = [
            {"genre_id": genre_ids[key], "model_name": model_name, "options": dict(options or {})}
            for _, key in wanted
        ]
        if rows:
            await session.execute(insert(Generation), rows)
    return len(rows)


# Keys per ``IN (...)`` lookup: well under SQLite's and PostgreSQL's bound-parameter limits.
LOOKUP_CHUNK = 500


def _keyed(names: Sequence[str]) -> list[tuple[str, str]]:
    """(display name, key) of each name that has a key, in order."""
    pairs = [(display, genre_key(display)) for display in map(clean_name, names)]
    return [(display, key) for display, key in pairs if key]


async def _genre_ids(session: AsyncSession, wanted: Sequence[tuple[str, str]]) -> dict[str, int]:
    """The genre id of every key in ``wanted``, inserting generated genres for new keys."""
    ids: dict[str, int] = {}
    keys = sorted({key for _, key in wanted})
    for start in range(0, len(keys), LOOKUP_CHUNK):
        chunk = keys[start : start + LOOKUP_CHUNK]
        found = await session.execute(select(Genre.name, Genre.id).where(Genre.name.in_(chunk)))
        ids.update({name: genre_id for name, genre_id in found})
    new: dict[str, str] = {}
    for display, key in wanted:
        if key not in ids:
            new.setdefault(key, display)
    if new:
        rows = [{"name": k, "display_name": d, "origin": ORIGIN_GENERATED} for k, d in new.items()]
        inserted = await session.execute(insert(Genre).returning(Genre.name, Genre.id), rows)
        ids.update({name: genre_id for name, genre_id in inserted})
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
