"""Generated genres delivered to Discord: reserving, attaching messages, looking them up.

A genre is issued at most once per guild. :func:`reserve_generations` inserts the rows *before*
the messages are posted, so the unique constraint on ``(guild_id, genre_id)`` settles races
between concurrent requests; :func:`attach_message` fills in the message id afterwards and
:func:`release_generation` removes a row whose message could not be posted. A process killed in
between leaves a row without a message: :func:`release_stale_reservations` removes those once
they are too old to be posted still. :func:`posted_generations` lists the genre messages whose
reactions are read back after downtime (``bot/reconcile.py``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from bot.lineage import Lineage
from bot.store.engine import SessionMaker
from bot.store.models import (
    ORIGIN_GENERATED,
    ORIGIN_TRAINING,
    Generation,
    Genre,
    ModelVersion,
    utcnow,
)
from scraping.normalize import genre_key

MAX_NAME = 200
# Guild ids per query of posted_generations (an IN list stays well under the limits of both
# SQLite and PostgreSQL).
GUILDS_PER_QUERY = 500


@dataclass(frozen=True)
class Reserved:
    """A genre reserved for one guild: ``generation_id`` is None when it could not be issued."""

    name: str
    generation_id: int | None
    reason: str | None = None  # "real", "issued" or "invalid" when not issued


@dataclass(frozen=True)
class GenerationRef:
    """What the voting cog needs to know about a genre message."""

    id: int
    guild_id: int | None
    genre_name: str
    user_id: int | None


@dataclass(frozen=True)
class PostedGeneration:
    """A genre message the bot posted: where to read its reactions back."""

    id: int
    guild_id: int
    channel_id: int
    message_id: int
    genre_name: str


async def issued_names(sessions: SessionMaker, guild_id: int | None) -> set[str]:
    """Display names of every genre issued in ``guild_id`` (the CLI scope when None)."""
    condition = (
        Generation.guild_id.is_(None) if guild_id is None else Generation.guild_id == guild_id
    )
    async with sessions.begin() as session:
        rows = await session.scalars(
            select(Genre.display_name)
            .join(Generation, Generation.genre_id == Genre.id)
            .where(condition)
        )
        return set(rows.all())


async def real_genre_names(sessions: SessionMaker) -> list[str]:
    """Display names of every real (training) genre in the store."""
    async with sessions.begin() as session:
        rows = await session.scalars(
            select(Genre.display_name).where(Genre.origin == ORIGIN_TRAINING)
        )
        return list(rows.all())


async def active_model_version(sessions: SessionMaker) -> tuple[int, str] | None:
    """``(id, name)`` of the active model version, if any."""
    async with sessions.begin() as session:
        row = (
            await session.execute(
                select(ModelVersion.id, ModelVersion.name).where(ModelVersion.active.is_(True))
            )
        ).first()
        return None if row is None else (int(row[0]), str(row[1]))


def _insert(session: Any, table: Any) -> Any:
    """The dialect's INSERT with ON CONFLICT support (SQLite and PostgreSQL)."""
    if session.bind.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


async def _genre_id(session: Any, name: str) -> tuple[int, str] | None:
    """Id and origin of the genre with ``name``'s key, creating a generated genre if new.

    ``ON CONFLICT DO NOTHING`` settles a race with a concurrent request without a savepoint.
    """
    key = genre_key(name)
    if not key or len(key) > MAX_NAME or len(name) > MAX_NAME:
        return None
    query = select(Genre.id, Genre.origin).where(Genre.name == key)
    row = (await session.execute(query)).first()
    if row is None:
        await session.execute(
            _insert(session, Genre)
            .values(name=key, display_name=name, origin=ORIGIN_GENERATED, created_at=utcnow())
            .on_conflict_do_nothing(index_elements=["name"])
        )
        row = (await session.execute(query)).one()
    return int(row[0]), str(row[1])


async def reserve_generations(
    sessions: SessionMaker,
    names: Sequence[str],
    *,
    guild_id: int | None,
    channel_id: int | None,
    user_id: int | None,
    model_name: str | None,
    model_version_id: int | None,
    options: dict[str, Any],
    lineage: Lineage | None = None,
) -> list[Reserved]:
    """Insert one generation per name; names that are real or already issued here are refused.

    ``lineage`` (default: a plain new genre, or one asked for ``like`` the ``options``' like)
    is stored with each row.

    All in one transaction, without savepoints: on SQLite, releasing the outermost savepoint
    commits, so a failure part-way used to leave half a request reserved for good. Now an
    error reserves nothing, and on SQLite the write lock is held from the first insert to the
    commit. ``ON CONFLICT DO NOTHING`` on ``(guild_id, genre_id)`` refuses a genre that a
    concurrent request reserved first (PostgreSQL waits for that request to finish).

    Two processes reserving overlapping names in different orders must not each wait for a row
    the other inserted (PostgreSQL: "deadlock detected"): new genres are written in the order of
    their keys, and on PostgreSQL a transaction-level advisory lock on the guild makes one
    server's reservations take turns. Generations are inserted in ``names`` order, so their ids
    follow the order the genres are posted in.
    """
    lineage = lineage or Lineage.of_like(options.get("like"))
    reserved: list[Reserved] = []
    async with sessions.begin() as session:
        await _lock_guild(session, guild_id)
        found: dict[int, tuple[int, str] | None] = {}
        for index in sorted(range(len(names)), key=lambda i: genre_key(names[i])):
            found[index] = await _genre_id(session, names[index])
        for index, name in enumerate(names):
            genre = found[index]
            if genre is None:
                reserved.append(Reserved(name, None, "invalid"))
                continue
            genre_id, origin = genre
            if origin == ORIGIN_TRAINING:
                reserved.append(Reserved(name, None, "real"))
                continue
            generation_id = await session.scalar(
                _insert(session, Generation)
                .values(
                    genre_id=genre_id,
                    guild_id=guild_id,
                    channel_id=channel_id,
                    user_id=user_id,
                    model_name=model_name,
                    model_version_id=model_version_id,
                    options=options,
                    created_at=utcnow(),
                    lineage_kind=lineage.kind,
                    lineage_parent_id=lineage.parent_id,
                    lineage_text=lineage.text,
                )
                .on_conflict_do_nothing(index_elements=["guild_id", "genre_id"])
                .returning(Generation.id)
            )
            if generation_id is None:
                reserved.append(Reserved(name, None, "issued"))
            else:
                reserved.append(Reserved(name, int(generation_id)))
    return reserved


# This project's advisory locks use the two-number form (namespace, key), apart from the
# one-number key space that other users of a shared database lock in. "MGR1" in ASCII.
ADVISORY_NAMESPACE = 0x4D475231


def guild_lock_key(guild_id: int) -> int:
    """A guild's advisory lock key: a stable 32-bit hash of its id (two guilds that share a
    key merely take turns).

    >>> guild_lock_key(1039473418735685712)
    2101114954
    """
    digest = hashlib.blake2b(guild_id.to_bytes(8, "big", signed=True), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


async def _lock_guild(session: Any, guild_id: int | None) -> None:
    """PostgreSQL: hold the guild's advisory lock until the transaction ends (SQLite needs none:
    its writers take turns already)."""
    if session.bind.dialect.name == "postgresql" and guild_id is not None:
        await session.execute(
            text("SELECT pg_advisory_xact_lock(:namespace, :key)"),
            {"namespace": ADVISORY_NAMESPACE, "key": guild_lock_key(guild_id)},
        )


async def attach_message(
    sessions: SessionMaker, generation_id: int, *, message_id: int, channel_id: int | None
) -> None:
    async with sessions.begin() as session:
        await session.execute(
            update(Generation)
            .where(Generation.id == generation_id)
            .values(message_id=message_id, channel_id=channel_id)
        )


async def release_generation(sessions: SessionMaker, generation_id: int) -> None:
    """Forget a reservation whose message was never posted (the genre may be issued again)."""
    async with sessions.begin() as session:
        await session.execute(delete(Generation).where(Generation.id == generation_id))


async def release_stale_reservations(sessions: SessionMaker, *, older_than: datetime) -> list[str]:
    """Release the reservations in servers that got no message and were made before
    ``older_than`` (a process died between reserving and posting); returns their genre names.

    Generations of the CLI (no guild) never get a message and are kept. The condition is
    repeated in the DELETE, so a message attached meanwhile keeps its row.
    """
    stale = (
        Generation.message_id.is_(None),
        Generation.guild_id.is_not(None),
        Generation.created_at < older_than,
    )
    async with sessions.begin() as session:
        genre_ids = (
            await session.scalars(delete(Generation).where(*stale).returning(Generation.genre_id))
        ).all()
        if not genre_ids:
            return []
        names = await session.scalars(
            select(Genre.display_name).where(Genre.id.in_(set(genre_ids)))
        )
        return sorted(names.all())


async def posted_generations(
    sessions: SessionMaker, *, since: datetime, guild_ids: Iterable[int]
) -> list[PostedGeneration]:
    """The genre messages posted in ``guild_ids`` since ``since``, newest first."""
    guilds = sorted(set(guild_ids))
    rows: list[Any] = []
    async with sessions.begin() as session:
        for start in range(0, len(guilds), GUILDS_PER_QUERY):
            result = await session.execute(
                select(
                    Generation.id,
                    Generation.guild_id,
                    Generation.channel_id,
                    Generation.message_id,
                    Genre.display_name,
                    Generation.created_at,
                )
                .join(Genre, Genre.id == Generation.genre_id)
                .where(
                    Generation.guild_id.in_(guilds[start : start + GUILDS_PER_QUERY]),
                    Generation.message_id.is_not(None),
                    Generation.channel_id.is_not(None),
                    Generation.created_at >= since,
                )
            )
            rows += result.all()
    rows.sort(key=lambda row: (row[5], row[0]), reverse=True)
    return [PostedGeneration(int(r[0]), int(r[1]), int(r[2]), int(r[3]), str(r[4])) for r in rows]


@dataclass(frozen=True)
class GenerationSource:
    """A genre message whose button was clicked: what its variations need."""

    id: int
    guild_id: int | None
    channel_id: int | None
    message_id: int | None
    name: str
    weirdness: int | None  # as its request chose it (None: not recorded)
    created_at: datetime


async def generation_source(sessions: SessionMaker, generation_id: int) -> GenerationSource | None:
    """The generation ``generation_id`` (None when there is none, e.g. it was released)."""
    async with sessions.begin() as session:
        row = (
            await session.execute(
                select(
                    Generation.id,
                    Generation.guild_id,
                    Generation.channel_id,
                    Generation.message_id,
                    Genre.display_name,
                    Generation.options,
                    Generation.created_at,
                )
                .join(Genre, Genre.id == Generation.genre_id)
                .where(Generation.id == generation_id)
            )
        ).first()
    if row is None:
        return None
    weirdness = (row[5] or {}).get("weirdness")
    return GenerationSource(
        id=int(row[0]),
        guild_id=row[1],
        channel_id=row[2],
        message_id=row[3],
        name=str(row[4]),
        weirdness=int(weirdness) if isinstance(weirdness, int) else None,
        created_at=row[6],
    )


async def generation_by_message(sessions: SessionMaker, message_id: int) -> GenerationRef | None:
    async with sessions.begin() as session:
        row = (
            await session.execute(
                select(Generation.id, Generation.guild_id, Genre.display_name, Generation.user_id)
                .join(Genre, Genre.id == Generation.genre_id)
                .where(Generation.message_id == message_id)
            )
        ).first()
    if row is None:
        return None
    return GenerationRef(int(row[0]), row[1], str(row[2]), row[3])


@dataclass(frozen=True)
class GenreLookup:
    """Everything `/genre check` says about a name."""

    query: str
    key: str
    display_name: str | None
    origin: str | None
    sources: list[str]
    # This guild's generation of it, if any.
    generation_id: int | None = None
    user_id: int | None = None
    created_at: datetime | None = None
    message_id: int | None = None
    channel_id: int | None = None
    model_name: str | None = None  # the model that made it (None: not recorded)
    lineage: Lineage | None = None  # how it was asked for here
    upvotes: int = 0
    downvotes: int = 0
    favorites: int = 0
    # Guilds other than this one where it was issued.
    elsewhere: int = 0

    @property
    def score(self) -> int:
        return self.upvotes - self.downvotes


async def lookup_genre(sessions: SessionMaker, name: str, guild_id: int | None) -> GenreLookup:
    """What the store knows about ``name`` from the point of view of ``guild_id``."""
    from bot.store.models import Favorite, GenreSource, Vote

    key = genre_key(name)
    async with sessions.begin() as session:
        genre = await session.scalar(select(Genre).where(Genre.name == key))
        if genre is None:
            return GenreLookup(name, key, None, None, [])
        sources = list(
            (
                await session.scalars(
                    select(GenreSource.source).where(GenreSource.genre_id == genre.id)
                )
            ).all()
        )
        gens = (
            await session.execute(
                select(
                    Generation.id,
                    Generation.guild_id,
                    Generation.user_id,
                    Generation.created_at,
                    Generation.message_id,
                    Generation.channel_id,
                    Generation.model_name,
                    Generation.lineage_kind,
                    Generation.lineage_parent_id,
                    Generation.lineage_text,
                ).where(Generation.genre_id == genre.id)
            )
        ).all()
        here = next((g for g in gens if g[1] == guild_id), None)
        elsewhere = sum(1 for g in gens if g[1] != guild_id)
        up = down = favs = 0
        if here is not None:
            values = (
                await session.scalars(select(Vote.value).where(Vote.generation_id == here[0]))
            ).all()
            up = sum(1 for v in values if v > 0)
            down = sum(1 for v in values if v < 0)
            favs = len(
                (
                    await session.scalars(
                        select(Favorite.id).where(Favorite.generation_id == here[0])
                    )
                ).all()
            )
    return GenreLookup(
        query=name,
        key=key,
        display_name=genre.display_name,
        origin=genre.origin,
        sources=sorted(set(sources)),
        generation_id=None if here is None else here[0],
        user_id=None if here is None else here[2],
        created_at=None if here is None else here[3],
        message_id=None if here is None else here[4],
        channel_id=None if here is None else here[5],
        model_name=None if here is None else here[6],
        lineage=None if here is None else Lineage.stored(here[7], here[8], here[9]),
        upvotes=up,
        downvotes=down,
        favorites=favs,
        elsewhere=elsewhere,
    )
