"""Counts for `microgenre stats` and `/genre stats`."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from bot.store.engine import SessionMaker
from bot.store.models import (
    ORIGIN_GENERATED,
    ORIGIN_TRAINING,
    Favorite,
    Genre,
    ModelVersion,
    Vote,
)
from bot.store.versions import guild_models


async def store_stats(sessions: SessionMaker) -> dict[str, Any]:
    """Counts of genres by origin, votes, favorites, the default model version (or None) and
    the servers' own models."""
    async with sessions.begin() as session:
        by_origin = dict(
            (await session.execute(select(Genre.origin, func.count()).group_by(Genre.origin))).all()
        )
        votes = await session.scalar(select(func.count()).select_from(Vote))
        favorites = await session.scalar(select(func.count()).select_from(Favorite))
        active = await session.scalar(
            select(ModelVersion).where(
                ModelVersion.active.is_(True), ModelVersion.guild_id.is_(None)
            )
        )
    guilds = await guild_models(sessions)
    return {
        "training_genres": int(by_origin.get(ORIGIN_TRAINING, 0)),
        "generated_genres": int(by_origin.get(ORIGIN_GENERATED, 0)),
        "votes": int(votes or 0),
        "favorites": int(favorites or 0),
        "active_model": None
        if active is None
        else {
            "name": active.name,
            "path": active.path,
            "base_model": active.base_model,
            "created_at": active.created_at.isoformat(),
            "metrics": active.metrics,
        },
        # Servers with a model of their own (the others use active_model, else the shipped).
        "guild_models": {
            str(guild): {"name": v.name, "path": v.path, "created_at": v.created_at.isoformat()}
            for guild, v in sorted(guilds.items())
        },
    }
