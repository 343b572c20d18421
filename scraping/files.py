"""Importers for genre files: saved pages, CSV, JSON, YAML and plain-text genre lists.

Every ``parse_*`` function is pure (text in, :class:`ParseReport` out). :func:`detect_kind`
recognises a document from its file name and content, :func:`parse_document` dispatches, and
:func:`read_document` reads a file leniently (a file cut inside a UTF-8 character still reads;
an empty or non-UTF-8 file raises :class:`ParseError`).

Formats (see ``../shared/data/README.md``):

========================  ===========  ====================================================
kind                      source       content
========================  ===========  ====================================================
``genres-csv``            (per row)    normalised table ``genre,source,datasets,parent,…``
``everynoise-main``       everynoise   saved main map page
``everynoise-genre``      everynoise   saved ``engenremap-*.html`` genre page
``everynoise-list``       everynoise   saved ``everynoise1d`` list page
``enao-csv``              everynoise   ``genre_name,preview_url,preview_track,color,top_pixel…``
``list-csv``              everynoise   ``"name";"url"`` in everynoise1d order
``geeoon-json``           everynoise   ``{"genres": ["…"], "total": N}``
``enaowatch-csv``         everynoise   ``genre,x,y,hex_colour`` (2021 map, y from the bottom)
``parent-map-json``       everynoise   ``{genre: parent}``, ``"done"`` = top level
``beets-txt``             wikipedia    one genre per line
``beets-tree-yaml``       wikipedia    nested YAML list of ``parent: [children]``
``wikipedia-list-json``   wikipedia    ``[{"url", "name", "key"}]``
``wikipedia-infobox-json``wikipedia    ``[{"genre": [...], "stylistic_origins": [...], …}]``
``musicbrainz-csv``       musicbrainz  ``name,mbid,disambiguation``
``musicbrainz-api``       musicbrainz  ``/ws/2/genre/all?fmt=json`` page
``discogs-json``          discogs      Essentia metadata, ``classes`` = ``"Genre---Style"``
``rym-json``              rym          ``{"genreHierarchy": [{"name", "level", "children"}]}``
========================  ===========  ====================================================
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from scraping import everynoise, musicbrainz
from scraping.normalize import genre_key
from scraping.records import GenreRecord, ParseError, ParseReport

SOURCES = ("everynoise", "musicbrainz", "wikipedia", "rym", "discogs")

# File types that may hold genres; anything else in a folder is passed over.
DATA_SUFFIXES = {".html", ".htm", ".csv", ".json", ".txt", ".yaml", ".yml"}


def _count(skipped: dict[str, int], reason: str, n: int = 1) -> None:
    skipped[reason] = skipped.get(reason, 0) + n


def _csv_rows(text: str, delimiter: str = ",") -> Iterator[list[str] | None]:
    """Rows of a CSV text; a row the csv module rejects (e.g. a quote cut off) is ``None``."""
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error:
            yield None
            return
        yield row


def _to_number(text: str) -> int | float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if value.is_integer() else value


def _split(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split("|") if part.strip()]


_RGB = re.compile(r"rgb\(\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*\)")


def hex_color(text: str) -> str | None:
    """``"rgb(172, 113, 25)"`` or ``"#AC7119"`` -> ``"#ac7119"``.

    >>> hex_color("rgb(172, 113, 25)"), hex_color("#AC7119"), hex_color("teal")
    ('#ac7119', '#ac7119', None)
    """
    text = text.strip()
    match = _RGB.fullmatch(text)
    if match:
        return "#" + "".join(f"{min(int(v), 255):02x}" for v in match.groups())
    if re.fullmatch(r"#[0-9a-fA-F]{6}", text):
        return text.lower()
    return None


class _Table:
    """Rows of a CSV with a header, mapped to dicts; short or broken rows are counted."""

    def __init__(self, text: str, required: Iterable[str], delimiter: str = ",") -> None:
        rows = _csv_rows(text, delimiter)
        header = next(rows, None)
        self.header = [h.strip().lower() for h in header] if header else []
        missing = [c for c in required if c not in self.header]
        if missing:
            raise ParseError(f"missing CSV column(s): {', '.join(missing)}")
        self._rows = rows
        self.skipped: dict[str, int] = {}

    def __iter__(self) -> Iterator[dict[str, str]]:
        width = len(self.header)
        for row in self._rows:
            if row is None:
                _count(self.skipped, "malformed row")
                continue
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != width:
                _count(self.skipped, "incomplete row" if len(row) < width else "malformed row")
                continue
            yield dict(zip(self.header, row, strict=True))


def _record(
    name: Any, source: str, skipped: dict[str, int], url: str | None = None, **extra: Any
) -> GenreRecord | None:
    if not isinstance(name, str) or not genre_key(name):
        _count(skipped, "entry without a name")
        return None
    if len(name) > 200:
        _count(skipped, "name too long")
        return None
    return GenreRecord.create(name, source, url or None, {k: v for k, v in extra.items()})


# --- Every Noise files --------------------------------------------------------------------


def parse_enao_csv(text: str) -> ParseReport:
    """wildanazz ``enao-genres.csv`` (2023 map): position, colour, font size, preview."""
    table = _Table(text, ["genre_name", "color", "top_pixel", "left_pixel", "font_size"])
    records = []
    for row in table:
        extra: dict[str, Any] = {
            "x": _to_number(row["left_pixel"]),
            "y": _to_number(row["top_pixel"]),
            "color": hex_color(row["color"]),
            "font_size": _to_number(row["font_size"]),
            "preview_url": row.get("preview_url") or None,
            "preview_track": row.get("preview_track") or None,
            "datasets": ["enao2023"],
        }
        record = _record(row["genre_name"], "everynoise", table.skipped, **extra)
        if record:
            records.append(record)
    return ParseReport(records, table.skipped, {"kind": "enao-csv"})


def parse_list_csv(text: str) -> ParseReport:
    """Music_Mosaic ``"name";"url"`` in everynoise1d order: ``rank``, ``playlist``."""
    table = _Table(text, ["name", "url"], delimiter=";")
    records = []
    for rank, row in enumerate(table, start=1):
        playlist = re.search(r"spotify:playlist:([A-Za-z0-9]+)", row["url"])
        extra: dict[str, Any] = {
            "rank": rank,
            "playlist": f"spotify:playlist:{playlist.group(1)}" if playlist else None,
            "datasets": ["list2023"],
        }
        record = _record(row["name"], "everynoise", table.skipped, **extra)
        if record:
            records.append(record)
    return ParseReport(records, table.skipped, {"kind": "list-csv"})


def parse_geeoon_json(data: Any) -> ParseReport:
    """Geeoon ``{"genres": [names], "total": N}``."""
    skipped: dict[str, int] = {}
    records = []
    for name in data["genres"]:
        record = _record(name, "everynoise", skipped, datasets=["json2022-08"])
        if record:
            records.append(record)
    return ParseReport(records, skipped, {"kind": "geeoon-json"})


def parse_enaowatch_csv(text: str) -> ParseReport:
    """EveryNoise-Watch ``genre,x,y,hex_colour`` (2021 map; its ``y`` counts from the bottom,
    kept as ``y_from_bottom_2021`` so it is never mixed with the top-down ``y``)."""
    table = _Table(text, ["genre", "x", "y", "hex_colour"])
    records = []
    for row in table:
        extra: dict[str, Any] = {
            "x_2021": _to_number(row["x"]),
            "y_from_bottom_2021": _to_number(row["y"]),
            "color": hex_color(row["hex_colour"]),
            "datasets": ["map2021-05"],
        }
        record = _record(row["genre"], "everynoise", table.skipped, **extra)
        if record:
            records.append(record)
    return ParseReport(records, table.skipped, {"kind": "enaowatch-csv"})


def parse_parent_map_json(data: Any) -> ParseReport:
    """reteps ``{genre: parent}`` (``"done"`` = top level): ``parents``."""
    skipped: dict[str, int] = {}
    records = []
    for name, parent in data.items():
        parents = [parent] if isinstance(parent, str) and parent != "done" else []
        record = _record(name, "everynoise", skipped, parents=parents, datasets=["parentmap2020"])
        if record:
            records.append(record)
    return ParseReport(records, skipped, {"kind": "parent-map-json"})


# --- Wikipedia-derived files --------------------------------------------------------------


_MAX_NAME_WORDS = 8
_MAX_NAME_CHARS = 80


def _name_like(line: str) -> bool:
    """Could this line be one genre name (not prose, code or a key/value pair)?"""
    words = line.split()
    return (
        len(line) <= _MAX_NAME_CHARS
        and len(words) <= _MAX_NAME_WORDS
        and not any(mark in line for mark in ("=", "{", "}", "<", ">", "\t", ": ", "://"))
    )


def parse_beets_txt(text: str) -> ParseReport:
    """beets ``genres.txt``: one genre per line.

    Refuses text that is not such a list (most lines prose or code), so a stray notes file
    in a folder is not imported line by line; in a list, odd lines are skipped and counted.
    """
    if "\x00" in text:
        raise ParseError("binary data in a text genre list")
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if lines and sum(_name_like(line) for line in lines) < 0.9 * len(lines):
        raise ParseError("not a genre list (expected one short genre name per line)")
    skipped: dict[str, int] = {}
    records = []
    for line in lines:
        if not _name_like(line):
            _count(skipped, "not a genre name")
            continue
        record = _record(line, "wikipedia", skipped, datasets=["beets_genres"])
        if record:
            records.append(record)
    return ParseReport(records, skipped, {"kind": "beets-txt"})


def parse_beets_tree_yaml(text: str) -> ParseReport:
    """beets ``genres-tree.yaml``: nested ``- parent:`` lists; each node gets ``parents``."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        problem = str(exc).splitlines()[0] if str(exc) else "syntax error"
        raise ParseError(f"invalid YAML: {problem}") from None
    if not isinstance(data, list):
        raise ParseError("not a genre tree (expected a YAML list)")
    skipped: dict[str, int] = {}
    records: list[GenreRecord] = []

    def walk(nodes: Any, parent: str | None) -> None:
        for node in nodes if isinstance(nodes, list) else [nodes]:
            if isinstance(node, dict):
                for name, children in node.items():
                    add(name, parent)
                    walk(children or [], str(name))
            elif isinstance(node, str):
                add(node, parent)
            elif node is not None:
                _count(skipped, "malformed entry")

    def add(name: Any, parent: str | None) -> None:
        parents = [parent] if parent else []
        record = _record(str(name), "wikipedia", skipped, parents=parents, datasets=["beets_tree"])
        if record:
            records.append(record)

    walk(data, None)
    return ParseReport(records, skipped, {"kind": "beets-tree-yaml"})


def parse_wikipedia_list_json(data: Any) -> ParseReport:
    """ribbas ``list.json``: ``[{"url", "name", "key"}]`` from Wikipedia's list of genres."""
    skipped: dict[str, int] = {}
    records = []
    for item in data:
        if not isinstance(item, dict):
            _count(skipped, "malformed entry")
            continue
        url = item.get("url") if isinstance(item.get("url"), str) else None
        record = _record(item.get("name"), "wikipedia", skipped, url, datasets=["ribbas_list"])
        if record:
            records.append(record)
    return ParseReport(records, skipped, {"kind": "wikipedia-list-json"})


# Infobox fields naming other genres, and how the named genre relates to the page's genre.
_INFOBOX_RELATIONS = {
    "subgenres": "parents",
    "derivative_forms": "derived_from",
    "fusion_genres": "fusion_of",
    "other_names": "alias_of",
}


def _snake(name: Any) -> str | None:
    return name.replace("_", " ") if isinstance(name, str) else None


def _str_list(value: Any) -> list[str]:
    if not isinstance(value, list):
        return []
    return [str(v).replace("_", " ") for v in value if isinstance(v, str | int)]


def parse_wikipedia_infobox_json(data: Any) -> ParseReport:
    """ribbas ``wrangled.min.json``: infobox data per genre (snake_case names).

    The page's genre gets ``origins`` (stylistic origins), ``origin_geo``, ``origin_years``,
    ``subgenres``, ``derivatives``, ``fusion_genres``, ``scenes``; the genres its infobox
    names as subgenres, derivative forms, fusion genres and other names become records too
    (with ``parents`` / ``derived_from`` / ``fusion_of`` / ``alias_of``). Stylistic origins
    are kept as an attribute only: that field also lists movements and cultures.
    """
    skipped: dict[str, int] = {}
    records = []
    for item in data:
        if not isinstance(item, dict) or not isinstance(item.get("genre"), list):
            _count(skipped, "malformed entry")
            continue
        names = _str_list(item["genre"])
        if not names:
            _count(skipped, "entry without a name")
            continue
        dates = [d for d in item.get("origin_dates") or [] if isinstance(d, int)]
        years = (
            f"{min(dates)}-{max(dates)}"
            if len(set(dates)) > 1
            else (f"{dates[0]}" if dates else None)
        )
        extra: dict[str, Any] = {
            "origins": _str_list(item.get("stylistic_origins")),
            "origin_geo": _str_list(item.get("origin_geoloc")),
            "origin_years": years,
            "subgenres": _str_list(item.get("subgenres")),
            "derivatives": _str_list(item.get("derivative_forms")),
            "fusion_genres": _str_list(item.get("fusion_genres")),
            "scenes": _str_list(item.get("regional_scenes")) + _str_list(item.get("local_scenes")),
            "datasets": ["ribbas_infobox"],
        }
        record = _record(names[0], "wikipedia", skipped, **extra)
        if record is None:
            continue
        records.append(record)
        for field, relation in _INFOBOX_RELATIONS.items():
            for other in _str_list(item.get(field)):
                if genre_key(other) == record.key:
                    continue
                link: dict[str, Any] = {relation: [record.name], "datasets": ["ribbas_infobox"]}
                related = _record(other, "wikipedia", skipped, None, **link)
                if related:
                    records.append(related)
    return ParseReport(records, skipped, {"kind": "wikipedia-infobox-json"})


# --- MusicBrainz, Discogs, RateYourMusic ---------------------------------------------------


def parse_musicbrainz_csv(text: str) -> ParseReport:
    """``name,mbid,disambiguation``: ``mbid``, ``disambiguation``, url of the genre page."""
    table = _Table(text, ["name", "mbid"])
    records = []
    for row in table:
        record = musicbrainz.make_record(row["name"], row["mbid"], row.get("disambiguation"))
        if record is None:
            _count(table.skipped, "entry without a name")
            continue
        records.append(record)
    return ParseReport(records, table.skipped, {"kind": "musicbrainz-csv"})


def parse_discogs_json(data: Any) -> ParseReport:
    """Essentia Discogs metadata: each ``"Genre---Style"`` class gives the style (``parents``
    = [genre]) and the top-level genre."""
    skipped: dict[str, int] = {}
    records: list[GenreRecord] = []
    for item in data["classes"]:
        if not isinstance(item, str) or "---" not in item:
            _count(skipped, "malformed entry")
            continue
        genre, style = item.split("---", 1)
        top = _record(genre, "discogs", skipped, datasets=["discogs400"], level=0)
        if top:
            records.append(top)
        sub = _record(
            style, "discogs", skipped, parents=[genre.strip().lower()], datasets=["discogs400"]
        )
        if sub:
            records.append(sub)
    return ParseReport(records, skipped, {"kind": "discogs-json"})


def parse_rym_json(data: Any) -> ParseReport:
    """RateYourMusic tree: every node with ``parents`` (a genre may sit under several)."""
    skipped: dict[str, int] = {}
    records: list[GenreRecord] = []
    stack: list[tuple[Any, str | None]] = [(n, None) for n in reversed(data["genreHierarchy"])]
    while stack:
        node, parent = stack.pop()
        if not isinstance(node, dict):
            _count(skipped, "malformed entry")
            continue
        name = node.get("name")
        extra: dict[str, Any] = {
            "parents": [parent.lower()] if parent else [],
            "datasets": ["rym_tree"],
        }
        record = _record(name, "rym", skipped, "https://rateyourmusic.com/genres/", **extra)
        if record is None:
            continue
        records.append(record)
        children = node.get("children") or []
        if isinstance(children, list):
            stack.extend((child, str(name)) for child in reversed(children))
    return ParseReport(records, skipped, {"kind": "rym-json"})


# --- the normalised table -----------------------------------------------------------------

_GENRES_CSV_COLUMNS = ["genre", "source", "datasets", "parent"]


def parse_genres_csv(text: str) -> ParseReport:
    """The normalised ``genres.csv`` (one row per source and genre, every source)."""
    table = _Table(text, _GENRES_CSV_COLUMNS)
    records = []
    for row in table:
        source = row["source"].strip().lower()
        if not source:
            _count(table.skipped, "row without a source")
            continue
        extra: dict[str, Any] = {
            "datasets": _split(row.get("datasets")),
            "parents": _split(row.get("parent")),
            "origin_geo": _split(row.get("origin_geo")),
            "origin_years": row.get("origin_years") or None,
            "disambiguation": row.get("note") or None,
        }
        if source == "everynoise":
            extra.update(
                {
                    "x": _to_number(row.get("x") or ""),
                    "y": _to_number(row.get("y") or ""),
                    "color": hex_color(row.get("color") or ""),
                    "font_size": _to_number(row.get("font_size") or ""),
                    "rank": _to_number(row.get("everynoise1d_rank") or ""),
                    "playlist": row.get("id") or None,
                }
            )
        elif source == "musicbrainz" and row.get("id"):
            extra["mbid"] = row["id"]
        url = row.get("url") or None
        if source == "musicbrainz" and row.get("id") and not url:
            url = musicbrainz.genre_url(row["id"])
        record = _record(row["genre"], source, table.skipped, url, **extra)
        if record:
            records.append(record)
    return ParseReport(records, table.skipped, {"kind": "genres-csv"})


# --- detection and dispatch ---------------------------------------------------------------

JsonParser = Callable[[Any], ParseReport]
TextParser = Callable[[str], ParseReport]

TEXT_PARSERS: dict[str, TextParser] = {
    "everynoise-main": everynoise.parse_main_page,
    "everynoise-genre": everynoise.parse_genre_page,
    "everynoise-list": everynoise.parse_list_page,
    "genres-csv": parse_genres_csv,
    "enao-csv": parse_enao_csv,
    "list-csv": parse_list_csv,
    "enaowatch-csv": parse_enaowatch_csv,
    "musicbrainz-csv": parse_musicbrainz_csv,
    "beets-txt": parse_beets_txt,
    "beets-tree-yaml": parse_beets_tree_yaml,
}
JSON_PARSERS: dict[str, JsonParser] = {
    "geeoon-json": parse_geeoon_json,
    "parent-map-json": parse_parent_map_json,
    "wikipedia-list-json": parse_wikipedia_list_json,
    "wikipedia-infobox-json": parse_wikipedia_infobox_json,
    "musicbrainz-api": musicbrainz.parse_genre_list_data,
    "discogs-json": parse_discogs_json,
    "rym-json": parse_rym_json,
}

# Which source a kind of document lists (None: several, per row).
KIND_SOURCE: dict[str, str | None] = {
    "genres-csv": None,
    "everynoise-main": "everynoise",
    "everynoise-genre": "everynoise",
    "everynoise-list": "everynoise",
    "enao-csv": "everynoise",
    "list-csv": "everynoise",
    "enaowatch-csv": "everynoise",
    "geeoon-json": "everynoise",
    "parent-map-json": "everynoise",
    "beets-txt": "wikipedia",
    "beets-tree-yaml": "wikipedia",
    "wikipedia-list-json": "wikipedia",
    "wikipedia-infobox-json": "wikipedia",
    "musicbrainz-csv": "musicbrainz",
    "musicbrainz-api": "musicbrainz",
    "discogs-json": "discogs",
    "rym-json": "rym",
}

# Import order within one run: older snapshots first, so newer values of a genre's map
# position, colour or rank win (scalar extras: last wins), the curated table last.
KIND_ORDER = [
    "parent-map-json",
    "enaowatch-csv",
    "everynoise-main",
    "everynoise-genre",
    "geeoon-json",
    "everynoise-list",
    "list-csv",
    "enao-csv",
    "beets-txt",
    "beets-tree-yaml",
    "wikipedia-list-json",
    "wikipedia-infobox-json",
    "musicbrainz-api",
    "musicbrainz-csv",
    "discogs-json",
    "rym-json",
    "genres-csv",
]


def _json_kind(data: Any) -> str | None:
    if isinstance(data, dict):
        genres = data.get("genres")
        if isinstance(genres, list):
            if all(isinstance(g, str) for g in genres):
                return "geeoon-json"
            return "musicbrainz-api"
        if "genreHierarchy" in data:
            return "rym-json" if isinstance(data["genreHierarchy"], list) else None
        if isinstance(data.get("classes"), list):
            return "discogs-json"
        if data and all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
            return "parent-map-json"
        return None
    if isinstance(data, list) and data:
        first = next((d for d in data if isinstance(d, dict)), None)
        if first is None:
            return None
        if "genre" in first and isinstance(first["genre"], list):
            return "wikipedia-infobox-json"
        if "name" in first and ("url" in first or "key" in first):
            return "wikipedia-list-json"
    return None


def _csv_kind(text: str) -> str | None:
    first_line = text.split("\n", 1)[0].strip().lower().replace('"', "")
    columns = [c.strip() for c in re.split(r"[,;]", first_line)]
    if columns[:4] == _GENRES_CSV_COLUMNS:
        return "genres-csv"
    if columns[:1] == ["genre_name"]:
        return "enao-csv"
    if columns[:2] == ["name", "url"] and ";" in first_line:
        return "list-csv"
    if columns[:4] == ["genre", "x", "y", "hex_colour"]:
        return "enaowatch-csv"
    if columns[:2] == ["name", "mbid"]:
        return "musicbrainz-csv"
    return None


def detect_kind(name: str, text: str) -> tuple[str, Any]:
    """The kind of a document (see the module table) from its file name and content, and the
    decoded JSON when it is JSON. Raises :class:`ParseError` when it is none of them."""
    suffix = Path(name).suffix.lower()
    head = text.lstrip()[:1]
    if suffix in {".html", ".htm"} or (not suffix and head == "<"):
        kind = everynoise.detect_page(text)
        if kind is None:
            raise ParseError("not an Every Noise page (main map, everynoise1d list or genre page)")
        return kind, None
    if suffix == ".json" or (not suffix and head in "[{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ParseError(f"invalid JSON (truncated?): {exc.msg} at line {exc.lineno}") from None
        kind = _json_kind(data)
        if kind is None:
            raise ParseError("JSON of an unknown layout (not a known genre list)")
        return kind, data
    if suffix == ".csv":
        kind = _csv_kind(text)
        if kind is None:
            raise ParseError("CSV with unknown columns (not a known genre table)")
        return kind, None
    if suffix in {".yaml", ".yml"}:
        return "beets-tree-yaml", None
    if suffix == ".txt":
        return "beets-txt", None
    raise ParseError(f"unknown file type {suffix or '(no suffix)'!r}")


def parse_document(name: str, text: str) -> ParseReport:
    """Detect the kind of ``text`` (named ``name``) and parse it; ``meta["kind"]`` and
    ``meta["source"]`` (None for the multi-source table) say what it was."""
    kind, data = detect_kind(name, text)
    if kind in JSON_PARSERS:
        try:
            report = JSON_PARSERS[kind](data)
        except (KeyError, TypeError, AttributeError):
            raise ParseError(f"malformed {kind} document") from None
    else:
        report = TEXT_PARSERS[kind](text)
    meta = {**report.meta, "kind": kind, "source": KIND_SOURCE[kind]}
    return ParseReport(report.records, report.skipped, meta)


def decode_utf8(data: bytes) -> tuple[str, bool]:
    """Decode UTF-8 (a BOM is dropped); a character cut off at the very end is dropped and
    reported with ``True``. Raises :class:`ParseError` for empty or non-UTF-8 data.

    >>> decode_utf8("é".encode() + "é".encode()[:1])
    ('é', True)
    """
    if not data.strip():
        raise ParseError("empty file")
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        text = decoder.decode(data, final=False)
    except UnicodeDecodeError as exc:
        raise ParseError(f"not UTF-8 text (invalid byte at offset {exc.start})") from None
    leftover, _ = decoder.getstate()
    if text.startswith("\ufeff"):
        text = text[1:]
    return text, bool(leftover)


MAX_FILE_BYTES = 64 * 1024 * 1024  # the largest shared file is 2.6 MB


def read_document(path: Path) -> ParseReport:
    """Read and parse one file (blocking: run it in a thread)."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ParseError(f"larger than {MAX_FILE_BYTES // 2**20} MiB: not a genre list")
        data = path.read_bytes()
    except OSError as exc:
        raise ParseError(f"cannot read: {exc.strerror or exc}") from None
    text, cut = decode_utf8(data)
    report = parse_document(path.name, text)
    if cut:
        _count(report.skipped, "character cut at the end of the file")
    return report


def data_files(folder: Path) -> list[Path]:
    """Files under ``folder`` (recursive) that may hold genres, in import order groups left
    to the caller: sorted by path. Hidden files and folders are passed over."""
    found = []
    for path in sorted(folder.rglob("*")):
        if any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        if path.is_file() and path.suffix.lower() in DATA_SUFFIXES:
            found.append(path)
    return found


def kind_rank(kind: str) -> int:
    return KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)
