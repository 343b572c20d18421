"""The plain data every source produces and every consumer (store import, dataset) takes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from scraping.normalize import clean_name, genre_key


@dataclass(frozen=True)
class GenreRecord:
    """One genre as one source lists it.

    ``extra`` holds whatever else the source offers, with these keys where known:
    ``x``, ``y`` (Every Noise map position, pixels), ``color`` ("#rrggbb"), ``font_size`` (%),
    ``rank`` (1-based list position), ``parents`` (list of genre names), ``similar`` and
    ``opposite`` (lists of genre names), ``mbid``, ``disambiguation``, ``datasets`` (list).

    >>> r = GenreRecord.create("Post-Rock", "everynoise", extra={"x": 10})
    >>> (r.name, r.key, r.source)
    ('post-rock', 'post rock', 'everynoise')
    """

    name: str  # clean_name() of the source's spelling: the display name
    source: str  # "everynoise", "musicbrainz", "wikipedia", "rym", "discogs", ...
    url: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @cached_property
    def key(self) -> str:
        # Computed once per record (imports touch it several times per record).
        return genre_key(self.name)

    @classmethod
    def create(
        cls, raw_name: str, source: str, url: str | None = None, extra: dict[str, Any] | None = None
    ) -> GenreRecord:
        return cls(name=clean_name(raw_name), source=source, url=url, extra=dict(extra or {}))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "url": self.url, "extra": self.extra}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenreRecord:
        return cls(
            name=data["name"],
            source=data["source"],
            url=data.get("url"),
            extra=dict(data.get("extra") or {}),
        )


class ParseError(ValueError):
    """Input that cannot be parsed at all: empty, not UTF-8, not JSON, the wrong kind of page.

    The message is one line, safe to show (the CLI adds the file name and exits non-zero).
    Partial damage (a truncated page, a malformed row) is not an error: parsers return what
    they could read and count the rest in :attr:`ParseReport.skipped`.
    """


@dataclass(frozen=True)
class ParseReport:
    """What a parser produced and what it skipped (with reasons), for partial imports.

    ``meta`` carries facts about the document itself (e.g. ``{"genre-count": 2165}`` for a
    MusicBrainz page, ``{"kind": "everynoise-main"}``).
    """

    records: list[GenreRecord]
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())


def merge_extra(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Merge what a source says about a genre: lists are united (order kept), scalars of
    ``new`` replace those of ``old``, empty values (None, "", []) never replace anything.

    >>> merge_extra({"datasets": ["a"], "x": 1, "y": 2}, {"datasets": ["b"], "x": 5, "y": None})
    {'datasets': ['a', 'b'], 'x': 5, 'y': 2}
    """
    merged = dict(old)
    for key, value in new.items():
        if value is None or value == "" or value == []:
            continue
        current = merged.get(key)
        if isinstance(value, list | tuple) and isinstance(current, list | tuple):
            combined = list(current)
            for item in value:
                if item not in combined:
                    combined.append(item)
            merged[key] = combined
        else:
            merged[key] = list(value) if isinstance(value, tuple) else value
    return merged


def merge_records(records: Iterable[GenreRecord]) -> list[GenreRecord]:
    """One record per (genre key, source): the first spelling and the first non-empty url are
    kept, extras merged with :func:`merge_extra` in input order. Records with an empty key are
    dropped.

    >>> a = GenreRecord.create("Post-Rock", "everynoise", extra={"datasets": ["x"]})
    >>> b = GenreRecord.create("post rock", "everynoise", url="u", extra={"datasets": ["y"]})
    >>> [(r.name, r.url, r.extra) for r in merge_records([a, b])]
    [('post-rock', 'u', {'datasets': ['x', 'y']})]
    """
    merged: dict[tuple[str, str], GenreRecord] = {}
    for record in records:
        key = record.key
        if not key:
            continue
        seen = merged.get((key, record.source))
        if seen is None:
            merged[(key, record.source)] = GenreRecord(
                record.name, record.source, record.url, merge_extra({}, record.extra)
            )
        else:
            merged[(key, record.source)] = GenreRecord(
                seen.name,
                seen.source,
                seen.url or record.url,
                merge_extra(seen.extra, record.extra),
            )
    return list(merged.values())
