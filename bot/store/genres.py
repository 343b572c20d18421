"""Real genres in the store: bulk import with provenance, export for the dataset builder.

One import is one transaction: either every record is merged or (on any error) nothing is.
Records are merged by :func:`scraping.normalize.genre_key` into :class:`Genre` (origin
``training``) with one :class:`GenreSource` row per (genre, source); a second identical import
changes nothing. The work is a handful of bulk statements per 500 keys, not one query per
record, so ~11 000 records import in seconds on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert, select, update

from bot.store.engine import SessionMaker
from bot.store.models import ORIGIN_GENERATED, ORIGIN_TRAINING, Genre, GenreSource
from scraping.records import GenreRecord, merge_extra, merge_records

CHUNK = 500  # keys per IN (...) list: far below SQLite's and PostgreSQL's parameter limits
MAX_NAME = 200  # String(200) columns


@dataclass
class ImportCounts:
    """``added``: genres created; ``updated``: existing genres whose provenance changed (a new
    source, changed url/extra, or a generated genre found to be real); ``unchanged``: records
    that changed nothing; ``skipped``: records not imported, with ``reasons``."""

    added: int = 0
    updated: int = 0
    skipped: int = 0
    unchanged: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped += n
        self.reasons[reason] = self.reasons.get(reason, 0) + n

    def to_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "skipped": self.skipped,
            "skipped_reasons": dict(sorted(self.reasons.items())),
        }


def _chunks(items: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _jsonable(extra: dict[str, Any]) -> dict[str, Any]:
    """What the JSON column gives back (tuples as lists, sorted keys irrelevant)."""
    result: dict[str, Any] = json.loads(json.dumps(extra, sort_keys=True, default=str))
    return result


async def import_records(sessions: SessionMaker, records: Iterable[GenreRecord]) -> ImportCounts:
    """Merge ``records`` into the store in one transaction and count what changed."""
    counts = ImportCounts()
    valid: list[GenreRecord] = []
    for record in records:
        if not record.key:
            counts.skip("empty name")
        elif len(record.name) > MAX_NAME or len(record.key) > MAX_NAME:
            counts.skip("name too long")
        elif not record.source or len(record.source) > 32:
            counts.skip("invalid source")
        else:
            valid.append(record)
    merged = merge_records(valid)
    if not merged:
        return counts

    # First spelling seen of each key is its display name.
    display: dict[str, str] = {}
    for record in merged:
        display.setdefault(record.key, record.name)
    keys = list(display)

    async with sessions.begin() as session:
        existing: dict[str, tuple[int, str]] = {}
        for chunk in _chunks(keys):
            rows = await session.execute(
                select(Genre.name, Genre.id, Genre.origin).where(Genre.name.in_(chunk))
            )
            existing.update({name: (gid, origin) for name, gid, origin in rows})

        new_keys = [k for k in keys if k not in existing]
        if new_keys:
            await session.execute(
                insert(Genre),
                [
                    {"name": k, "display_name": display[k][:MAX_NAME], "origin": ORIGIN_TRAINING}
                    for k in new_keys
                ],
            )
            for chunk in _chunks(new_keys):
                added = await session.execute(
                    select(Genre.name, Genre.id).where(Genre.name.in_(chunk))
                )
                existing.update({name: (gid, ORIGIN_TRAINING) for name, gid in added})
        counts.added = len(new_keys)
        new_set = set(new_keys)

        changed: set[str] = set()
        promote = [k for k in keys if existing[k][1] == ORIGIN_GENERATED]
        for chunk in _chunks(promote):
            await session.execute(
                update(Genre).where(Genre.name.in_(chunk)).values(origin=ORIGIN_TRAINING)
            )
        changed.update(promote)

        ids = sorted({existing[k][0] for k in keys})
        stored: dict[tuple[int, str], tuple[int, str | None, dict[str, Any]]] = {}
        for chunk in _chunks(ids):
            source_rows = await session.execute(
                select(
                    GenreSource.genre_id,
                    GenreSource.source,
                    GenreSource.id,
                    GenreSource.url,
                    GenreSource.extra,
                ).where(GenreSource.genre_id.in_(chunk))
            )
            for genre_id, source, row_id, url, extra in source_rows:
                stored[(genre_id, source)] = (row_id, url, extra or {})

        inserts: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        for record in merged:
            genre_id = existing[record.key][0]
            extra = _jsonable(record.extra)
            row = stored.get((genre_id, record.source))
            if row is None:
                inserts.append(
                    {
                        "genre_id": genre_id,
                        "source": record.source,
                        "source_name": record.name[:MAX_NAME],
                        "url": record.url,
                        "extra": extra,
                    }
                )
                changed.add(record.key)
                continue
            row_id, old_url, old_extra = row
            new_extra = _jsonable(merge_extra(old_extra, extra))
            new_url = record.url or old_url
            if new_extra != _jsonable(old_extra) or new_url != old_url:
                updates.append({"id": row_id, "url": new_url, "extra": new_extra})
                changed.add(record.key)
            elif record.key not in changed:
                counts.unchanged += 1
        if inserts:
            await session.execute(insert(GenreSource), inserts)
        if updates:
            await session.execute(update(GenreSource), updates)
        counts.updated = len(changed - new_set)
    return counts


async def export_genres(
    sessions: SessionMaker, origin: str = ORIGIN_TRAINING
) -> list[dict[str, Any]]:
    """Every genre of ``origin`` with its provenance, sorted by key::

    {"key": "post rock", "display_name": "post-rock",
     "sources": [{"source": "everynoise", "source_name": "post-rock", "url": ...,
                  "extra": {"x": ..., "y": ..., ...}}, ...]}
    """
    async with sessions.begin() as session:
        genres = (
            await session.execute(
                select(Genre.id, Genre.name, Genre.display_name)
                .where(Genre.origin == origin)
                .order_by(Genre.name)
            )
        ).all()
        rows = await session.execute(
            select(
                GenreSource.genre_id,
                GenreSource.source,
                GenreSource.source_name,
                GenreSource.url,
                GenreSource.extra,
            )
            .join(Genre, Genre.id == GenreSource.genre_id)
            .where(Genre.origin == origin)
            .order_by(GenreSource.genre_id, GenreSource.source)
        )
        sources: dict[int, list[dict[str, Any]]] = {}
        for genre_id, source, source_name, url, extra in rows:
            sources.setdefault(genre_id, []).append(
                {"source": source, "source_name": source_name, "url": url, "extra": extra or {}}
            )
    return [
        {"key": name, "display_name": display_name, "sources": sources.get(gid, [])}
        for gid, name, display_name in genres
    ]


async def known_genre_keys(sessions: SessionMaker) -> set[str]:
    """Keys of every genre in the store, real or generated (for novelty checks)."""
    async with sessions.begin() as session:
        return set((await session.scalars(select(Genre.name))).all())
