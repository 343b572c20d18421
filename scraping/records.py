"""The plain data every source produces and every consumer (store import, dataset) takes."""

from __future__ import annotations

from dataclasses import dataclass, field
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

    @property
    def key(self) -> str:
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


@dataclass(frozen=True)
class ParseReport:
    """What a parser produced and what it skipped (with reasons), for partial imports."""

    records: list[GenreRecord]
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())
