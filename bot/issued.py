"""The genres already issued in each server, kept in memory as a hint for the generator.

The store decides novelty (:func:`bot.store.generations.reserve_generations`); this cache only
lets the generator avoid wasting samples on a server's own genres. A server's names load from
the store on its first request, then grow with every reservation. Servers unused for
:data:`ISSUED_IDLE_S`, and the least recently used beyond ``max_guilds``, are dropped when idle
(no request of theirs running): dropping is only a cache miss.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Collection, Iterator

from scraping.normalize import genre_key

# Seconds after its last request that a guild's issued names are dropped from memory.
ISSUED_IDLE_S = 3600.0

Loader = Callable[[int | None], Awaitable[Collection[str]]]


class IssuedNames:
    """Per guild, the keys of the genres issued there (see the module docstring)."""

    def __init__(self, load: Loader, max_guilds: int) -> None:
        self._load = load
        self.max_guilds = max_guilds
        # Least recently used first.
        self._keys: OrderedDict[int | None, set[str]] = OrderedDict()
        self._used: dict[int | None, float] = {}
        self._locks: dict[int | None, asyncio.Lock] = {}
        self._requests: Counter[int | None] = Counter()

    def __len__(self) -> int:
        return len(self._keys)

    @contextlib.contextmanager
    def request(self, guild_id: int | None) -> Iterator[None]:
        """A request of ``guild_id`` runs: its names are not dropped meanwhile."""
        self._requests[guild_id] += 1
        try:
            yield
        finally:
            self._requests[guild_id] -= 1
            if not self._requests[guild_id]:
                del self._requests[guild_id]

    async def of(self, guild_id: int | None) -> set[str]:
        """The guild's live set of keys (loaded from the store on first use)."""
        lock = self._locks.setdefault(guild_id, asyncio.Lock())
        async with lock:
            if guild_id not in self._keys:
                self._keys[guild_id] = {genre_key(n) for n in await self._load(guild_id)}
            self._keys.move_to_end(guild_id)
            self._used[guild_id] = time.monotonic()
            keys = self._keys[guild_id]
        self._evict()
        return keys

    def seed(self, guild_id: int | None, keys: set[str]) -> None:
        """Set a guild's keys directly (tests: a cache that has fallen behind the store)."""
        self._keys[guild_id] = keys
        self._used[guild_id] = time.monotonic()

    def discard(self, guild_id: int | None, name: str) -> None:
        keys = self._keys.get(guild_id)
        if keys is not None:
            keys.discard(genre_key(name))

    def _idle(self, guild: int | None) -> bool:
        lock = self._locks.get(guild)
        return not self._requests[guild] and not (lock is not None and lock.locked())

    def _evict(self) -> None:
        """Drop the guilds unused for ``ISSUED_IDLE_S`` and the least recently used beyond
        ``max_guilds``, when idle; a busy guild stays, even past the bound."""
        stale = time.monotonic() - ISSUED_IDLE_S
        for guild in [g for g in self._keys if self._used.get(g, 0.0) < stale]:
            if self._idle(guild):
                del self._keys[guild]
        excess = len(self._keys) - self.max_guilds
        for guild in [g for g in self._keys if self._idle(g)][: max(0, excess)]:
            del self._keys[guild]
        for guild in [g for g in self._used if g not in self._keys]:
            del self._used[guild]
        for guild in [g for g in self._locks if g not in self._keys and self._idle(g)]:
            del self._locks[guild]
