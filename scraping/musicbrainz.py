"""MusicBrainz genres: the web service's genre list (JSON, paginated) and CSV extracts.

``GET https://musicbrainz.org/ws/2/genre/all?fmt=json&limit=100&offset=N`` answers::

    {"genre-count": 2165, "genre-offset": 0,
     "genres": [{"id": "<mbid>", "name": "2 tone", "disambiguation": ""}, ...]}

``limit`` is at most 100; the client pages with ``offset`` until ``genre-count`` is reached.

>>> r = parse_genre_list('{"genre-count": 1, "genre-offset": 0, "genres": '
...                      '[{"id": "a-b", "name": "Acid Jazz", "disambiguation": ""}]}')
>>> (r.records[0].name, r.records[0].url, r.meta["genre-count"])
('acid jazz', 'https://musicbrainz.org/genre/a-b', 1)
"""

from __future__ import annotations

import json
from typing import Any

from scraping.normalize import genre_key
from scraping.records import GenreRecord, ParseError, ParseReport

SOURCE = "musicbrainz"
API_ROOT = "https://musicbrainz.org/ws/2/"
PAGE_SIZE = 100


def genre_list_url(offset: int, limit: int = PAGE_SIZE) -> str:
    return f"{API_ROOT}genre/all?fmt=json&limit={limit}&offset={offset}"


def genre_url(mbid: str) -> str:
    return f"https://musicbrainz.org/genre/{mbid}"


def make_record(name: Any, mbid: Any, disambiguation: Any) -> GenreRecord | None:
    """A record from the three MusicBrainz genre fields, or None when the name is unusable."""
    if not isinstance(name, str) or not genre_key(name):
        return None
    extra: dict[str, Any] = {"datasets": ["musicbrainz_genres"]}
    url = None
    if isinstance(mbid, str) and mbid.strip():
        extra["mbid"] = mbid.strip()
        url = genre_url(mbid.strip())
    if isinstance(disambiguation, str) and disambiguation.strip():
        extra["disambiguation"] = disambiguation.strip()
    return GenreRecord.create(name, SOURCE, url, extra)


def parse_genre_list_data(data: Any) -> ParseReport:
    """Like :func:`parse_genre_list` for an already decoded JSON document."""
    if not isinstance(data, dict) or not isinstance(data.get("genres"), list):
        raise ParseError("not a MusicBrainz genre list (no 'genres' array)")
    records: list[GenreRecord] = []
    skipped: dict[str, int] = {}
    for item in data["genres"]:
        if not isinstance(item, dict):
            skipped["malformed entry"] = skipped.get("malformed entry", 0) + 1
            continue
        record = make_record(item.get("name"), item.get("id"), item.get("disambiguation"))
        if record is None:
            skipped["entry without a name"] = skipped.get("entry without a name", 0) + 1
            continue
        records.append(record)
    meta: dict[str, Any] = {"kind": "musicbrainz-api"}
    for field in ("genre-count", "genre-offset"):
        if isinstance(data.get(field), int):
            meta[field] = data[field]
    return ParseReport(records, skipped, meta)


def parse_genre_list(text: str) -> ParseReport:
    """One page of ``/ws/2/genre/all?fmt=json``; ``meta`` has ``genre-count`` and
    ``genre-offset`` when the page states them."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParseError(f"invalid JSON (truncated?): {exc.msg} at line {exc.lineno}") from None
    return parse_genre_list_data(data)
