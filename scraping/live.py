"""Live scrapes: which pages to fetch for a source, fetched politely, parsed off the loop.

* Every Noise: the main map (positions, colours, font sizes) and the ``everynoise1d`` list
  (popularity rank, playlist).
* MusicBrainz: ``/ws/2/genre/all?fmt=json`` page by page (100 genres each) until the
  ``genre-count`` the first page states.
"""

from __future__ import annotations

import asyncio

from scraping import everynoise, musicbrainz
from scraping.fetch import Fetcher, FetchError
from scraping.records import ParseError, ParseReport

# Stop paging after this many MusicBrainz pages whatever the count says (about 2 200 genres
# in 2024: 23 pages).
MAX_MUSICBRAINZ_PAGES = 200


async def scrape_everynoise(
    fetcher: Fetcher, genre_pages: int = 0
) -> list[tuple[str, ParseReport]]:
    """The main map and the list page, each parsed in a worker thread; then the genre pages
    (similar and opposite genres) of the ``genre_pages`` most popular genres (list order).

    A genre page that cannot be fetched or read is counted in its report's ``skipped``, it
    does not end the run (at 1 request/s, all 5 000+ pages take about 1.5 hours).
    """
    from tqdm import tqdm

    urls = [everynoise.MAIN_URL, everynoise.LIST_URL]
    main_text, list_text = await fetcher.get_many(urls, desc="everynoise")
    main = await asyncio.to_thread(everynoise.parse_main_page, main_text)
    listing = await asyncio.to_thread(everynoise.parse_list_page, list_text)
    results = [(everynoise.MAIN_URL, main), (everynoise.LIST_URL, listing)]
    if genre_pages <= 0:
        return results
    page_of = {r.key: r.url for r in main.records if r.url}
    ranked = [page_of[r.key] for r in listing.records if r.key in page_of]
    listed = set(ranked)
    kind = {"kind": "everynoise-genre"}
    ranked += [url for url in page_of.values() if url not in listed]
    with tqdm(
        total=min(genre_pages, len(ranked)),
        desc="genre pages",
        unit="page",
        disable=not fetcher.settings.progress,
    ) as bar:
        for url in ranked[:genre_pages]:
            try:
                text = await fetcher.get_text(url)
                report = await asyncio.to_thread(everynoise.parse_genre_page, text)
            except FetchError as exc:
                report = ParseReport([], {"genre page not fetched": 1}, {**kind, "error": str(exc)})
            except ParseError as exc:
                report = ParseReport([], {"unexpected genre page": 1}, {**kind, "error": str(exc)})
            results.append((url, report))
            bar.update(1)
    return results


async def scrape_musicbrainz(
    fetcher: Fetcher, page_size: int = musicbrainz.PAGE_SIZE
) -> list[tuple[str, ParseReport]]:
    """Every page of the MusicBrainz genre list, in order."""
    from tqdm import tqdm

    results: list[tuple[str, ParseReport]] = []
    first_url = musicbrainz.genre_list_url(0, page_size)
    first = await asyncio.to_thread(musicbrainz.parse_genre_list, await fetcher.get_text(first_url))
    results.append((first_url, first))
    total = first.meta.get("genre-count")
    if not isinstance(total, int):
        raise FetchError(f"{first_url}: the answer states no genre-count")
    pages = min(-(-total // page_size), MAX_MUSICBRAINZ_PAGES)
    with tqdm(
        total=pages,
        initial=1,
        desc="musicbrainz",
        unit="page",
        disable=not fetcher.settings.progress,
    ) as bar:
        for page in range(1, pages):
            url = musicbrainz.genre_list_url(page * page_size, page_size)
            report = await asyncio.to_thread(
                musicbrainz.parse_genre_list, await fetcher.get_text(url)
            )
            results.append((url, report))
            bar.update(1)
            if not report.records:
                break  # the list shrank since the first page
    return results
