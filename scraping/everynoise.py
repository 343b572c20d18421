"""Parsers for everynoise.com pages: the main map, the ``everynoise1d`` list, genre pages.

Each parser is a pure function from the page text to a :class:`ParseReport`; a page that is
not of the expected kind raises :class:`ParseError`, a damaged page (cut at any byte, a broken
entry) gives the entries that could be read and counts the others in ``skipped``.

Main map (``https://everynoise.com/``), one line per genre::

    <div id=item2 preview_url="https://p.scdn.co/mp3-preview/…" class="genre scanme" scan=true
     style="color: #ca8205; top: 2827px; left: 1081px; font-size: 103%"
     onclick="playx(&quot;4SUH6sq37NhLPgon2TrT0a&quot;, &quot;champeta&quot;, this);"
     title="e.g. Koffee el Kafetero &quot;El Chicle&quot;">champeta<a class=navlink
     href="engenremap-champeta.html" …>&raquo;</a> </div>

List page (``everynoise1d.html``), one table row per genre, most popular first::

    <tr valign=top class=""><td align=right class=note>1</td><td><a class=note
     href="https://embed.spotify.com/?uri=spotify:playlist:6gS3HhOiI17QNojjPuPzqc" …>&#x260A;</a>
     </td><td class=note><a href="?root=pop&scope=all" style="color: #…" …>pop</a></td></tr>

Genre page (``engenremap-<slug>.html``): ``id=itemN`` divs are artists, ``id=nearbyitemN``
divs similar genres and ``id=mirroritemN`` divs opposite genres.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urljoin

from scraping.normalize import clean_name, genre_key
from scraping.pagetext import Element, page_title, parse_style, split_elements, strip_tags
from scraping.records import GenreRecord, ParseError, ParseReport

SOURCE = "everynoise"
BASE_URL = "https://everynoise.com/"
MAIN_URL = "https://everynoise.com/"
LIST_URL = "https://everynoise.com/everynoise1d.html"

_SITE_TITLE = "Every Noise at Once"
_AS_OF = re.compile(r"as of (\d{4}-\d{2}-\d{2})")
_PLAYX = re.compile(r"""playx\(\s*["']([^"']*)["']\s*,\s*["']((?:[^"'\\]|\\.)*)["']""")
_ITEM_ID = re.compile(r"^(item|nearbyitem|mirroritem)(\d+)$")
_HREF = re.compile(r"""<a\b[^>]*?\bhref\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))""", re.I)
_PLAYLIST = re.compile(r"spotify:playlist:([A-Za-z0-9]+)")
_PLAYLIST_URL = re.compile(r"open\.spotify\.com/(?:user/[^/\s\"']+/)?playlist/([A-Za-z0-9]+)")
_OPEN_LINK = re.compile(r"<a\b", re.I)


def _count(skipped: dict[str, int], reason: str, n: int = 1) -> None:
    skipped[reason] = skipped.get(reason, 0) + n


def _is_everynoise(text: str) -> bool:
    title = page_title(text) or ""
    return title.startswith(_SITE_TITLE) or "everynoise" in text[:4000].lower()


def _item_name(element: Element) -> str:
    """The text before the ``»`` navigation link."""
    body = _OPEN_LINK.split(element.body, maxsplit=1)[0]
    return clean_name(strip_tags(body))


def _first_href(body: str) -> str | None:
    match = _HREF.search(body)
    if not match:
        return None
    return next(g for g in match.groups() if g is not None)


def _genre_div_extra(element: Element) -> dict[str, Any]:
    extra: dict[str, Any] = dict(parse_style(element.attrs.get("style", "")))
    preview = element.attrs.get("preview_url")
    if preview:
        extra["preview_url"] = preview
    playx = _PLAYX.search(element.attrs.get("onclick", ""))
    if playx and playx.group(1):
        extra["preview_track_id"] = playx.group(1)
    return extra


def snapshot_date(text: str) -> str | None:
    """The page's own date ("… by Spotify as of 2022-04-29.")."""
    match = _AS_OF.search(text)
    return match.group(1) if match else None


def parse_main_page(text: str) -> ParseReport:
    """Every genre on the main map with its position, colour, font size and preview.

    ``extra``: ``x`` (left, px), ``y`` (top, px; small = mechanical/electric, large =
    organic), ``color``, ``font_size`` (%), ``preview_url``, ``preview_track_id``,
    ``datasets`` (``["html2022-04"]`` from the page's "as of" date).
    """
    if not _is_everynoise(text):
        raise ParseError("not an Every Noise at Once page")
    elements = [
        e for e in split_elements(text, "div") if _ITEM_ID.match(e.attrs.get("id", "") or "")
    ]
    genre_divs = [e for e in elements if "genre" in (e.attrs.get("class") or "").split()]
    title = page_title(text) or ""
    if any(e.attrs["id"].startswith(("nearby", "mirror")) for e in elements) or (
        title.startswith(_SITE_TITLE + " - ")
    ):
        raise ParseError("this is an Every Noise genre page, not the main map")
    date = snapshot_date(text)
    dataset = f"html{date[:7]}" if date else "html"
    records: list[GenreRecord] = []
    skipped: dict[str, int] = {}
    seen: set[str] = set()
    for element in genre_divs:
        if not element.complete:
            _count(skipped, "truncated entry")
            continue
        name = _item_name(element)
        key = genre_key(name)
        if not key:
            _count(skipped, "entry without a name")
            continue
        if key in seen:
            _count(skipped, "duplicate entry")
            continue
        seen.add(key)
        href = _first_href(element.body)
        url = urljoin(BASE_URL, href) if href and "engenremap-" in href else None
        extra = _genre_div_extra(element)
        extra["datasets"] = [dataset]
        records.append(GenreRecord(name, SOURCE, url, extra))
    if not records and not skipped:
        raise ParseError("no genre entries found on this Every Noise page (cut before the map?)")
    meta = {"kind": "everynoise-main", "as_of": date, "entries": len(genre_divs)}
    return ParseReport(records, skipped, meta)


def parse_genre_page(text: str) -> ParseReport:
    """A genre page: the genre (with ``similar`` and ``opposite`` genre lists and its
    "The Sound of …" ``playlist``) plus one record per similar/opposite genre.
    """
    title = page_title(text) or ""
    if not title.startswith(_SITE_TITLE + " - "):
        if _is_everynoise(text):
            raise ParseError("not an Every Noise genre page (no 'Every Noise at Once - <genre>')")
        raise ParseError("not an Every Noise at Once page")
    name = clean_name(title[len(_SITE_TITLE) + 3 :])
    if not genre_key(name):
        raise ParseError("the genre page names no genre")
    if detect_page(text) == "everynoise-list":
        raise ParseError("this is the Every Noise list (everynoise1d) page, not a genre page")
    skipped: dict[str, int] = {}
    lists: dict[str, list[GenreRecord]] = {"nearbyitem": [], "mirroritem": []}
    artists = 0
    for element in split_elements(text, "div"):
        match = _ITEM_ID.match(element.attrs.get("id", "") or "")
        if not match:
            continue
        if match.group(1) == "item":
            artists += 1
            continue
        if not element.complete:
            _count(skipped, "truncated entry")
            continue
        other = _item_name(element)
        if not genre_key(other):
            _count(skipped, "entry without a name")
            continue
        if genre_key(other) == genre_key(name):
            continue  # the page's own genre is drawn among its neighbours
        href = _first_href(element.body) or ""
        url = urljoin(BASE_URL, href.split("#", 1)[0]) if "engenremap-" in href else None
        lists[match.group(1)].append(GenreRecord(other, SOURCE, url, {}))
    similar = [r.name for r in lists["nearbyitem"]]
    opposite = [r.name for r in lists["mirroritem"]]
    extra: dict[str, Any] = {"similar": similar, "opposite": opposite}
    playlist = _PLAYLIST_URL.search(text)
    if playlist:
        extra["playlist"] = f"spotify:playlist:{playlist.group(1)}"
    slug = re.sub(r"[^a-z0-9]", "", genre_key(name).replace(" ", ""))
    main = GenreRecord(name, SOURCE, urljoin(BASE_URL, f"engenremap-{slug}.html"), extra)
    meta = {"kind": "everynoise-genre", "genre": name, "artists": artists}
    return ParseReport([main, *lists["nearbyitem"], *lists["mirroritem"]], skipped, meta)


def parse_list_page(text: str) -> ParseReport:
    """The ``everynoise1d`` list: ``rank`` (1-based row position), ``playlist`` id, ``color``."""
    rows = [e for e in split_elements(text, "tr") if "class=note" in e.body.replace('"', "")]
    if not rows:
        if _is_everynoise(text) and "genre scanme" in text:
            raise ParseError("this is the Every Noise main map, not the everynoise1d list")
        if _is_everynoise(text) and re.search(r"<t[dr]\b", text):
            raise ParseError("no list rows found on this everynoise1d page (cut early?)")
        raise ParseError("not an Every Noise list (everynoise1d) page")
    records: list[GenreRecord] = []
    skipped: dict[str, int] = {}
    seen: set[str] = set()
    for position, row in enumerate(rows, start=1):
        if not row.complete:
            _count(skipped, "truncated entry")
            continue
        cells = split_elements(row.body, "td")
        if len(cells) < 3 or not all(c.complete for c in cells[:3]):
            _count(skipped, "malformed row")
            continue
        name = clean_name(strip_tags(cells[-1].body))
        if not genre_key(name):
            _count(skipped, "entry without a name")
            continue
        if genre_key(name) in seen:
            _count(skipped, "duplicate entry")
            continue
        seen.add(genre_key(name))
        rank_text = strip_tags(cells[0].body)
        extra: dict[str, Any] = {"rank": int(rank_text) if rank_text.isdigit() else position}
        playlist = _PLAYLIST.search(row.body)
        if playlist:
            extra["playlist"] = f"spotify:playlist:{playlist.group(1)}"
        name_link = split_elements(cells[-1].body, "a")
        if name_link:
            extra.update(
                {k: v for k, v in parse_style(name_link[0].attrs.get("style", "")).items()}
            )
        extra["datasets"] = ["list"]
        records.append(GenreRecord(name, SOURCE, None, extra))
    return ParseReport(records, skipped, {"kind": "everynoise-list", "rows": len(rows)})


def detect_page(text: str) -> str | None:
    """``"everynoise-main"``, ``"everynoise-genre"``, ``"everynoise-list"`` or None."""
    if not _is_everynoise(text):
        return None
    unquoted = text.replace('"', "")
    titled = (page_title(text) or "").startswith(_SITE_TITLE + " - ")
    if "id=nearbyitem" in unquoted or "id=mirroritem" in unquoted:
        return "everynoise-genre"
    if "genre scanme" in text:
        return "everynoise-genre" if titled else "everynoise-main"
    if re.search(r"<tr\b", text, re.I) and "class=note" in unquoted:
        return "everynoise-list"
    return "everynoise-genre" if titled else None
