"""Polite HTTP fetching: robots.txt, a per-host rate limit, bounded retries, an on-disk cache.

One :class:`Fetcher` wraps one injected :class:`aiohttp.ClientSession` (or creates and closes
its own with :meth:`Fetcher.open`). For each URL it

1. answers from the on-disk cache when the raw response is there (no request at all),
2. checks the host's ``robots.txt`` (fetched once per host and run, ``urllib.robotparser``),
3. waits for the host's rate limiter (``aiolimiter``: one request per ``1/rps`` seconds),
4. retries 429, 5xx, timeouts and dropped connections with exponential backoff, honouring
   ``Retry-After`` (seconds or an HTTP date), at most ``max_retries`` times, never waiting
   longer than ``max_backoff_s``,
5. stores the raw body of a 200 response in the cache.

Every failure is a :class:`FetchError` with a one-line message.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import urllib.robotparser
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiolimiter import AsyncLimiter

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class FetchError(Exception):
    """A page could not be fetched; the message is one line, safe to show."""


class RobotsDisallowed(FetchError):
    """robots.txt of the host does not allow our User-Agent to fetch the URL."""


@dataclass(frozen=True)
class FetchSettings:
    user_agent: str
    requests_per_second: float = 1.0
    timeout_s: float = 30.0
    max_retries: int = 4
    max_backoff_s: float = 120.0
    backoff_base_s: float = 1.0  # first retry waits this long, then 2x, 4x, ...
    cache_dir: Path | None = None  # None: no cache
    progress: bool = True
    respect_robots: bool = True
    refresh: bool = False  # ignore cached responses (still store the new ones)


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date).

    >>> retry_after_seconds("3"), retry_after_seconds(None), retry_after_seconds("soon")
    (3.0, None, None)
    >>> retry_after_seconds("Sun, 01 Jan 2023 00:00:10 GMT",
    ...                     now=datetime(2023, 1, 1, tzinfo=UTC))
    10.0
    """
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def backoff_delay(attempt: int, settings: FetchSettings, retry_after: float | None) -> float:
    """Wait before retry number ``attempt`` (0-based): Retry-After when given, else
    exponential; capped at ``max_backoff_s``.

    >>> s = FetchSettings("ua", backoff_base_s=1.0, max_backoff_s=5.0)
    >>> [backoff_delay(a, s, None) for a in range(4)], backoff_delay(0, s, 30.0)
    ([1.0, 2.0, 4.0, 5.0], 5.0)
    """
    delay = retry_after if retry_after is not None else settings.backoff_base_s * (2**attempt)
    return min(delay, settings.max_backoff_s)


class ResponseCache:
    """Raw 200 responses on disk: ``<dir>/<host>/<sha256 of the URL>.body`` plus ``.json``
    with the URL, content type and fetch time. Writes are atomic (temp file + rename)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _paths(self, url: str) -> tuple[Path, Path]:
        host = urlsplit(url).netloc.replace(":", "_") or "local"
        digest = hashlib.sha256(url.encode()).hexdigest()[:40]
        base = self.directory / host / digest
        return base.with_suffix(".body"), base.with_suffix(".json")

    def get(self, url: str) -> bytes | None:
        body, meta = self._paths(url)
        try:
            stored = json.loads(meta.read_text(encoding="utf-8"))
            if stored.get("url") != url:
                return None
            return body.read_bytes()
        except (OSError, ValueError):
            return None

    def put(self, url: str, data: bytes, content_type: str | None) -> None:
        body, meta = self._paths(url)
        body.parent.mkdir(parents=True, exist_ok=True)
        for path, content in (
            (body, data),
            (
                meta,
                json.dumps(
                    {
                        "url": url,
                        "content_type": content_type,
                        "fetched_at": datetime.now(UTC).isoformat(),
                        "bytes": len(data),
                    }
                ).encode(),
            ),
        ):
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_bytes(content)
            tmp.replace(path)


@dataclass
class FetchStats:
    requests: int = 0
    cache_hits: int = 0
    retries: int = 0
    robots_fetched: list[str] = field(default_factory=list)


Sleep = Callable[[float], Awaitable[Any]]


class Fetcher:
    """Fetch pages politely through one shared :class:`aiohttp.ClientSession`."""

    def __init__(
        self, session: aiohttp.ClientSession, settings: FetchSettings, *, sleep: Sleep | None = None
    ) -> None:
        self.session = session
        self.settings = settings
        self.cache = ResponseCache(settings.cache_dir) if settings.cache_dir else None
        self.stats = FetchStats()
        self._sleep: Sleep = sleep or asyncio.sleep
        self._limiters: dict[str, AsyncLimiter] = {}
        self._robots: dict[str, urllib.robotparser.RobotFileParser] = {}
        self._robots_locks: dict[str, asyncio.Lock] = {}

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: FetchSettings) -> AsyncIterator[Fetcher]:
        """A fetcher with its own session (User-Agent header set), closed on exit."""
        async with aiohttp.ClientSession(headers={"User-Agent": settings.user_agent}) as session:
            yield cls(session, settings)

    def _limiter(self, host: str) -> AsyncLimiter:
        if host not in self._limiters:
            # One request per 1/rps seconds: no bursts, whatever the rate.
            self._limiters[host] = AsyncLimiter(1, 1.0 / self.settings.requests_per_second)
        return self._limiters[host]

    async def _request(self, url: str) -> tuple[int, bytes, str | None, float | None]:
        """One rate-limited GET: status, body, content type, Retry-After seconds."""
        host = urlsplit(url).netloc
        async with self._limiter(host):
            self.stats.requests += 1
            timeout = aiohttp.ClientTimeout(total=self.settings.timeout_s)
            headers = {"User-Agent": self.settings.user_agent}
            async with self.session.get(url, timeout=timeout, headers=headers) as response:
                body = await response.read()
                retry_after = retry_after_seconds(response.headers.get("Retry-After"))
                return response.status, body, response.content_type, retry_after

    async def _get_with_retries(self, url: str) -> tuple[int, bytes, str | None]:
        attempts = self.settings.max_retries + 1
        problem = ""
        for attempt in range(attempts):
            retry_after: float | None = None
            try:
                status, body, content_type, retry_after = await self._request(url)
            except TimeoutError:
                problem = f"timed out after {self.settings.timeout_s:g} s"
            except aiohttp.ClientError as exc:
                problem = f"connection failed ({type(exc).__name__})"
            else:
                if status not in RETRY_STATUSES:
                    return status, body, content_type
                problem = f"HTTP {status}"
            if attempt + 1 < attempts:
                delay = backoff_delay(attempt, self.settings, retry_after)
                log.info("%s: %s, retrying in %.1f s", url, problem, delay)
                self.stats.retries += 1
                await self._sleep(delay)
        raise FetchError(f"{url}: {problem} (gave up after {attempts} attempts)")

    async def _robots_for(self, url: str) -> urllib.robotparser.RobotFileParser:
        parts = urlsplit(url)
        root = f"{parts.scheme}://{parts.netloc}"
        lock = self._robots_locks.setdefault(root, asyncio.Lock())
        async with lock:
            if root in self._robots:
                return self._robots[root]
            parser = urllib.robotparser.RobotFileParser(root + "/robots.txt")
            status, body, _ = await self._get_with_retries(root + "/robots.txt")
            self.stats.robots_fetched.append(root)
            if status >= 500:
                # RFC 9309: an unreachable robots.txt means "disallow everything".
                parser.parse(["User-agent: *", "Disallow: /"])
            elif status >= 400:
                parser.parse([])  # no robots.txt: everything is allowed
            else:
                parser.parse(body.decode("utf-8", errors="replace").splitlines())
            parser.modified()
            self._robots[root] = parser
            return parser

    async def get_bytes(self, url: str, *, use_cache: bool = True) -> bytes:
        """The body of ``url`` (HTTP 200 only), from the cache when it is there."""
        if use_cache and not self.settings.refresh and self.cache is not None:
            cached = await asyncio.to_thread(self.cache.get, url)
            if cached is not None:
                self.stats.cache_hits += 1
                return cached
        if self.settings.respect_robots:
            robots = await self._robots_for(url)
            if not robots.can_fetch(self.settings.user_agent, url):
                raise RobotsDisallowed(f"{url}: disallowed by robots.txt")
        status, body, content_type = await self._get_with_retries(url)
        if status != 200:
            raise FetchError(f"{url}: HTTP {status}")
        if self.cache is not None:
            await asyncio.to_thread(self.cache.put, url, body, content_type)
        return body

    async def get_text(self, url: str, *, use_cache: bool = True) -> str:
        """:meth:`get_bytes` decoded as UTF-8 (undecodable bytes replaced)."""
        return (await self.get_bytes(url, use_cache=use_cache)).decode("utf-8", errors="replace")

    async def get_many(
        self, urls: Sequence[str], *, desc: str = "fetching", use_cache: bool = True
    ) -> list[str]:
        """Texts of ``urls`` in order, with a progress bar (the rate limit paces them)."""
        from tqdm import tqdm

        texts = []
        with tqdm(
            total=len(urls), desc=desc, unit="page", disable=not self.settings.progress
        ) as bar:
            for url in urls:
                texts.append(await self.get_text(url, use_cache=use_cache))
                bar.update(1)
        return texts
