"""The fetch layer against a local aiohttp server on 127.0.0.1 (no network)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from scraping.fetch import Fetcher, FetchError, FetchSettings, RobotsDisallowed
from scraping.live import scrape_musicbrainz

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "scraping"
UA = "Micro-Genre-Generator/test"


@dataclass
class Site:
    """A scripted web site: per path, a queue of responses; counts every request."""

    base: str = ""
    robots: str = "User-agent: *\nDisallow: /private/\n"
    script: dict[str, list[Callable[[], Awaitable[web.StreamResponse]]]] = field(
        default_factory=dict
    )
    hits: Counter[str] = field(default_factory=Counter)
    user_agents: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return self.base.rstrip("/") + path

    def then(self, path: str, *responses: Callable[[], Awaitable[web.StreamResponse]]) -> None:
        self.script.setdefault(path, []).extend(responses)


def reply(text: str, status: int = 200, **headers: str) -> Callable[[], Awaitable[web.Response]]:
    async def respond() -> web.Response:
        return web.Response(text=text, status=status, headers=headers)

    return respond


def slow(seconds: float) -> Callable[[], Awaitable[web.Response]]:
    async def respond() -> web.Response:
        await asyncio.sleep(seconds)
        return web.Response(text="late")

    return respond


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    state = Site()

    async def handler(request: web.Request) -> web.StreamResponse:
        path = request.path_qs
        state.hits[path] += 1
        state.user_agents.append(request.headers.get("User-Agent", ""))
        if request.path == "/robots.txt":
            if state.robots == "404":
                return web.Response(status=404)
            return web.Response(text=state.robots)
        queue = state.script.get(path)
        if not queue:
            return web.Response(status=404)
        responder = queue.pop(0) if len(queue) > 1 else queue[0]
        return await responder()

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    state.base = str(server.make_url("/"))
    try:
        yield state
    finally:
        await server.close()


@dataclass
class Sleeps:
    delays: list[float] = field(default_factory=list)

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def settings(tmp_path: Path, **overrides: object) -> FetchSettings:
    values: dict[str, object] = {
        "user_agent": UA,
        "requests_per_second": 1000.0,
        "timeout_s": 2.0,
        "max_retries": 3,
        "backoff_base_s": 0.5,
        "max_backoff_s": 30.0,
        "cache_dir": tmp_path / "cache",
        "progress": False,
    }
    values.update(overrides)
    return FetchSettings(**values)  # type: ignore[arg-type]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_plain_fetch_sends_user_agent_and_checks_robots(
    site: Site, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    site.then("/page", reply("hello"))
    fetcher = Fetcher(http, settings(tmp_path))
    assert await fetcher.get_text(site.url("/page")) == "hello"
    assert site.hits["/robots.txt"] == 1
    assert set(site.user_agents) == {UA}


async def test_robots_disallow_means_no_request(
    site: Site, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    site.then("/private/page", reply("secret"))
    fetcher = Fetcher(http, settings(tmp_path))
    with pytest.raises(RobotsDisallowed, match=r"disallowed by robots\.txt"):
        await fetcher.get_text(site.url("/private/page"))
    assert site.hits["/private/page"] == 0


async def test_robots_fetched_once_per_host(
    site: Site, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    site.then("/a", reply("a"))
    site.then("/b", reply("b"))
    fetcher = Fetcher(http, settings(tmp_path))
    await asyncio.gather(fetcher.get_text(site.url("/a")), fetcher.get_text(site.url("/b")))
    assert site.hits["/robots.txt"] == 1


async def test_missing_robots_allows_everything(
    site: Site, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    site.robots = "404"
    site.then("/private/page", reply("ok"))
    assert await Fetcher(http, settings(tmp_path)).get_text(site.url("/private/page")) == "ok"


async def test_429_then_success_honours_retry_after(
    site: Site, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    site.then("/busy", reply("slow down", 429, **{"Retry-After": "7"}), reply("done"))
    sleeps = Sleeps()
    fetcher = Fetcher(http, settings(tmp_path), sleep=sleeps)
    assert await fetcher.get_text(site.url("/busy")) == "done"
    assert site.hits["/busy"] == 2
    assert sleeps.delays == [7.0]
    assert fetcher.stats.retries == 1


async def test_retry_after_is_capped(
    site: Site, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    site.then("/busy", reply("", 429, **{"Retry-After": "3600"}), reply("done"))
    sleeps = Sleeps()
    fetcher = Fetcher(http, settings(tmp_path, max_backoff_s=10.0), sleep=sleeps)
    assert await fetcher.get_text(site.url("/busy")) == "done"
    assert sleeps.delays == [10.0]


async def test_500_then_success_backs_off_exponentially(
    site: Site, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    site.then("/flaky", reply("", 500), reply("", 503), reply("fine"))
    sleeps = Sleeps()
    fetcher = Fetcher(http, settings(tmp_path), sleep=sleeps)
    assert await fetcher.get_text(site.url("/flaky")) == "fine"
    assert sleeps.delays == [0.5, 1.0]


async def test_retries_are_bounded(site: Site, http: aiohttp.ClientSession, tmp_path: Path) -> None:
    site.then("/down", reply("", 502))
    sleeps = Sleeps()
    fetcher = Fetcher(http, settings(tmp_path, max_retries=2), sleep=sleeps)
    with pytest.raises(FetchError, match=r"HTTP 502 \(gave up after 3 attempts\)"):
        await fetcher.get_text(site.url("/down"))
    assert site.hits["/down"] == 3
    assert len(sleeps.delays) == 2


async def test_timeout_then_success(
    site: Site, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    site.then("/slow", slow(2.0), reply("quick"))
    sleeps = Sleeps()
    fetcher = Fetcher(http, settings(tmp_path, timeout_s=0.3), sleep=sleeps)
    assert await fetcher.get_text(site.url("/slow")) == "quick"
    assert sleeps.delays == [0.5]


async def test_timeout_every_time_is_one_line_error(
    site: Site, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    site.then("/slow", slow(2.0))
    fetcher = Fetcher(http, settings(tmp_path, timeout_s=0.2, max_retries=1), sleep=Sleeps())
    with pytest.raises(FetchError) as info:
        await fetcher.get_text(site.url("/slow"))
    assert "timed out after 0.2 s (gave up after 2 attempts)" in str(info.value)


async def test_404_is_not_retried(site: Site, http: aiohttp.ClientSession, tmp_path: Path) -> None:
    fetcher = Fetcher(http, settings(tmp_path), sleep=Sleeps())
    with pytest.raises(FetchError, match="HTTP 404"):
        await fetcher.get_text(site.url("/missing"))
    assert site.hits["/missing"] == 1


async def test_cache_hit_needs_no_request(
    site: Site, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    site.then("/page", reply("first"), reply("second"))
    first = Fetcher(http, settings(tmp_path))
    assert await first.get_text(site.url("/page")) == "first"
    requests_before = sum(site.hits.values())
    # A new fetcher (a re-run) with the same cache folder: no request, not even robots.txt.
    again = Fetcher(http, settings(tmp_path))
    assert await again.get_text(site.url("/page")) == "first"
    assert sum(site.hits.values()) == requests_before
    assert again.stats.cache_hits == 1 and again.stats.requests == 0
    # Bypassing the cache refetches.
    assert await again.get_text(site.url("/page"), use_cache=False) == "second"


async def test_errors_are_not_cached(
    site: Site, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    site.then("/page", reply("", 404), reply("now there"))
    fetcher = Fetcher(http, settings(tmp_path), sleep=Sleeps())
    with pytest.raises(FetchError):
        await fetcher.get_text(site.url("/page"))
    assert await fetcher.get_text(site.url("/page")) == "now there"


async def test_rate_limit_spaces_requests(
    site: Site, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    for path in ("/a", "/b", "/c"):
        site.then(path, reply(path))
    fetcher = Fetcher(http, settings(tmp_path, requests_per_second=10.0, cache_dir=None))
    loop = asyncio.get_running_loop()
    start = loop.time()
    await fetcher.get_many([site.url(p) for p in ("/a", "/b", "/c")])
    # robots.txt + 3 pages at 10/s: at least 3 gaps of 0.1 s.
    assert loop.time() - start >= 0.28


async def test_musicbrainz_pagination(
    site: Site, http: aiohttp.ClientSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scraping import musicbrainz

    monkeypatch.setattr(musicbrainz, "API_ROOT", site.url("/ws/2/"))
    page0 = (FIXTURES / "musicbrainz_page0.json").read_text()
    page1 = (FIXTURES / "musicbrainz_page1.json").read_text()
    site.then("/ws/2/genre/all?fmt=json&limit=2&offset=0", reply(page0))
    site.then("/ws/2/genre/all?fmt=json&limit=2&offset=2", reply(page1))
    fetcher = Fetcher(http, settings(tmp_path))
    reports = await scrape_musicbrainz(fetcher, page_size=2)
    names = [r.name for _, report in reports for r in report.records]
    assert names == ["2 tone", "2-step", "acid jazz"]


async def test_live_scrape_end_to_end_then_from_cache(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`microgenre scrape` without --from: both live sources, then a re-run from the cache."""
    from bot.cli.scrape import collect_live
    from bot.config import load_config
    from scraping import everynoise, musicbrainz

    monkeypatch.setattr(everynoise, "MAIN_URL", site.url("/"))
    monkeypatch.setattr(everynoise, "LIST_URL", site.url("/everynoise1d.html"))
    monkeypatch.setattr(musicbrainz, "API_ROOT", site.url("/ws/2/"))
    site.then("/", reply((FIXTURES / "everynoise_main_small.html").read_text()))
    site.then("/everynoise1d.html", reply((FIXTURES / "everynoise1d_small.html").read_text()))
    page0 = (
        (FIXTURES / "musicbrainz_page0.json")
        .read_text()
        .replace('"genre-count": 3', '"genre-count": 2')
    )
    site.then("/ws/2/genre/all?fmt=json&limit=100&offset=0", reply(page0))
    config = load_config(
        None,
        environ={
            "MICROGENRE_PATHS_DATA_DIR": str(tmp_path / "data"),
            "MICROGENRE_SCRAPING_REQUESTS_PER_SECOND": "1000",
            "MICROGENRE_SCRAPING_PROGRESS": "false",
        },
    )
    result = await collect_live(config, "all")
    by_source = Counter(r.source for r in result.records)
    assert by_source == {"everynoise": 8, "musicbrainz": 2}
    assert [i["kind"] for i in result.inputs] == [
        "everynoise-main",
        "everynoise-list",
        "musicbrainz-api",
    ]
    assert (tmp_path / "data" / "cache" / "http").is_dir()
    hits = sum(site.hits.values())
    again = await collect_live(config, "all")
    assert len(again.records) == len(result.records)
    assert sum(site.hits.values()) == hits  # every page came from the cache
    # --refresh: the admin's way to pick up a changed site before retraining.
    await collect_live(config, "everynoise", refresh=True)
    assert site.hits["/"] == 2 and site.hits["/everynoise1d.html"] == 2


async def test_live_everynoise_with_genre_pages(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scraping import everynoise
    from scraping.live import scrape_everynoise

    monkeypatch.setattr(everynoise, "BASE_URL", site.url("/"))
    monkeypatch.setattr(everynoise, "MAIN_URL", site.url("/"))
    monkeypatch.setattr(everynoise, "LIST_URL", site.url("/everynoise1d.html"))
    site.then("/", reply((FIXTURES / "everynoise_main_small.html").read_text()))
    site.then("/everynoise1d.html", reply((FIXTURES / "everynoise1d_small.html").read_text()))
    genre_page = (FIXTURES / "everynoise_genre_small.html").read_text()
    site.then("/engenremap-champeta.html", reply(genre_page.replace("breakbeat", "champeta")))
    # /engenremap-drumandbass.html is missing (404): counted, the run goes on.
    site.then("/engenremap-postrock.html", reply("<html><title>Oops</title></html>"))
    fetcher = Fetcher(aiohttp.ClientSession(), settings(tmp_path, max_retries=0), sleep=Sleeps())
    try:
        reports = await scrape_everynoise(fetcher, genre_pages=10)
    finally:
        await fetcher.session.close()
    pages = reports[2:]
    # No list rank for these (the list fixture has other genres): main page order.
    assert [url.rsplit("/", 1)[-1] for url, _ in pages] == [
        "engenremap-champeta.html",
        "engenremap-drumandbass.html",
        "engenremap-musicapopularbrasileira.html",
        "engenremap-postrock.html",
    ]
    champeta = pages[0][1].records[0]
    assert champeta.name == "champeta"
    assert champeta.extra["similar"] == ["big beat", "nu skool breaks"]
    assert pages[1][1].skipped == {"genre page not fetched": 1}
    assert pages[3][1].skipped == {"unexpected genre page": 1}
