"""The generation service the cogs use: a fair queue, per-guild novelty, hot reload.

:class:`GenreService` sits between the cogs and a :class:`Generator` (the model pipeline over the
worker client in production, a scripted fake in tests). Each request first waits for a slot in
the bot's :class:`~bot.queue.FairQueue` (round-robin across guilds; the caller hears its place in
that line, then the worker's queue positions), which also refuses what could not be served in
time. It keeps, per guild, the set of genres
already issued there (loaded once from the store, then updated by every delivery) and passes it
as the ``exclude`` set, so a genre is never offered twice in one server even when requests run
concurrently; real genres are excluded by the generator's fingerprint and checked again here.

The production generator (:class:`PipelineGenerator`) imports ``model.worker`` and
``model.pipeline`` lazily; neither imports torch in this process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from bot.queue import FairQueue
from bot.store.engine import SessionMaker
from bot.store.generations import active_model_version, issued_names, real_genre_names
from model.artifacts import load_fingerprint
from scraping.normalize import genre_key

if TYPE_CHECKING:
    from bot.config import Config

log = logging.getLogger(__name__)

# Called with the caller's place in line: first in the bot's fair queue (1 = next to get a
# slot), then in the worker's (1 = next batch, 0 = being generated now); may return an
# awaitable, which is scheduled as a task.
PositionCallback = Callable[[int], object]

# Weirdness 1..5 of `/genre new` mapped to a sampling temperature.
WEIRDNESS_TEMPERATURE = {1: 0.6, 2: 0.8, 3: 1.0, 4: 1.2, 5: 1.4}
# Attempts to top up a delivery when concurrent requests in the same guild took some names.
MAX_TOP_UPS = 2
# Guilds whose issued names stay in memory; beyond it the least recently used idle guild is
# dropped (dropping is only a cache miss: its names load from the store on its next request).
MAX_CACHED_GUILDS = 10_000


def weirdness_temperature(weirdness: int) -> float:
    """Sampling temperature for a weirdness level (clamped to 1..5).

    >>> weirdness_temperature(3), weirdness_temperature(9)
    (1.0, 1.4)
    """
    return WEIRDNESS_TEMPERATURE[min(5, max(1, weirdness))]


@dataclass(frozen=True)
class GeneratorOutput:
    genres: list[str]
    model_name: str
    stats: dict[str, int] = field(default_factory=dict)


class Generator(Protocol):
    """What :class:`GenreService` needs from the model side."""

    async def generate(
        self,
        count: int,
        *,
        like: str | None,
        temperature: float | None,
        exclude: Collection[str],
        on_position: PositionCallback | None,
    ) -> GeneratorOutput: ...

    def health(self) -> dict[str, Any]: ...

    @property
    def queue_length(self) -> int: ...

    async def reload(self, adapter_path: str | None) -> None: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class Delivery:
    """Genres generated for one `/genre new`."""

    genres: list[str]
    model_name: str
    model_version_id: int | None = None
    stats: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0


class GenreService:
    """Generation for the bot; see the module docstring."""

    def __init__(
        self,
        generator: Generator,
        sessions: SessionMaker,
        *,
        queue: FairQueue | None = None,
        max_cached_guilds: int = MAX_CACHED_GUILDS,
    ) -> None:
        self.generator = generator
        self.sessions = sessions
        self.queue = queue or FairQueue()
        self.max_cached_guilds = max_cached_guilds
        # Least recently used first; a guild is evicted only when no request of it runs.
        self._issued: OrderedDict[int | None, set[str]] = OrderedDict()
        self._issued_locks: dict[int | None, asyncio.Lock] = {}
        self._requests: Counter[int | None] = Counter()  # requests running, per guild
        self._real_keys: set[str] | None = None
        self._version: tuple[int, str] | None = None
        self._in_flight = 0
        self._closed = False

    async def start(self) -> None:
        """Load the real genre keys and the active model version from the store."""
        names = await real_genre_names(self.sessions)
        self._real_keys = {genre_key(n) for n in names}
        self._version = await active_model_version(self.sessions)

    @property
    def queue_length(self) -> int:
        """Requests waiting: in the bot's line plus the generator's queue (else in flight)."""
        try:
            behind = int(self.generator.queue_length)
        except Exception:  # a generator that cannot tell
            behind = self._in_flight
        return self.queue.waiting + behind

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def active_version(self) -> tuple[int, str] | None:
        return self._version

    def health(self) -> dict[str, Any]:
        try:
            health = dict(self.generator.health())
        except Exception as exc:  # health must never raise into /genre stats
            health = {"state": "unknown", "last_error": str(exc)}
        health.setdefault("queue_length", self.queue_length)
        health["bot_in_flight"] = self._in_flight
        health["bot_waiting"] = self.queue.waiting
        health["genres_per_s"] = round(self.queue.meter.rate, 2)
        return health

    @property
    def cached_guilds(self) -> int:
        return len(self._issued)

    async def _issued_in(self, guild_id: int | None) -> set[str]:
        lock = self._issued_locks.setdefault(guild_id, asyncio.Lock())
        async with lock:
            if guild_id not in self._issued:
                names = await issued_names(self.sessions, guild_id)
                self._issued[guild_id] = {genre_key(n) for n in names}
            self._issued.move_to_end(guild_id)
            issued = self._issued[guild_id]
        self._evict()
        return issued

    def _evict(self) -> None:
        """Drop the least recently used guilds beyond ``max_cached_guilds`` that are idle (no
        request running, lock free); a busy guild stays, even past the bound."""

        def idle(guild: int | None) -> bool:
            lock = self._issued_locks.get(guild)
            return not self._requests[guild] and not (lock is not None and lock.locked())

        excess = len(self._issued) - self.max_cached_guilds
        for guild in [g for g in self._issued if idle(g)][: max(0, excess)]:
            del self._issued[guild]
        for guild in [g for g in self._issued_locks if g not in self._issued and idle(g)]:
            del self._issued_locks[guild]

    def forget(self, guild_id: int | None, name: str) -> None:
        """A delivered genre was not posted after all: it may be issued again."""
        issued = self._issued.get(guild_id)
        if issued is not None:
            issued.discard(genre_key(name))

    async def generate(
        self,
        count: int,
        *,
        like: str | None = None,
        temperature: float | None = None,
        guild_id: int | None,
        user_id: int | None,
        on_position: PositionCallback | None = None,
    ) -> Delivery:
        """``count`` genres never issued in ``guild_id`` and not real.

        Waits for a slot in the fair queue first; raises a :class:`~bot.errors.QueueRefusedError`
        when the line is too long. Model errors (busy, crashed, could not generate) propagate
        unchanged.
        """
        ticket = await self.queue.acquire(
            guild_id=guild_id, user_id=user_id, count=count, on_position=on_position
        )
        delivered: list[str] = []
        try:
            return await self._generate(
                count, like, temperature, guild_id, user_id, on_position, delivered
            )
        finally:
            self.queue.release(ticket, delivered=len(delivered))

    async def _generate(
        self,
        count: int,
        like: str | None,
        temperature: float | None,
        guild_id: int | None,
        user_id: int | None,
        on_position: PositionCallback | None,
        delivered: list[str],
    ) -> Delivery:
        """:meth:`generate` once a slot is held; fills ``delivered`` as names are accepted."""
        if self._real_keys is None:
            await self.start()
        real = self._real_keys or set()
        self._requests[guild_id] += 1
        start = time.perf_counter()
        self._in_flight += 1
        stats: dict[str, int] = {}
        model_name = ""
        try:
            issued = await self._issued_in(guild_id)
            for _ in range(1 + MAX_TOP_UPS):
                missing = count - len(delivered)
                if missing <= 0:
                    break
                # Names of this guild plus this request's own (the set is shared and live).
                exclude = {*issued}
                out = await self.generator.generate(
                    missing,
                    like=like,
                    temperature=temperature,
                    exclude=exclude,
                    on_position=on_position,
                )
                model_name = out.model_name
                for key, value in out.stats.items():
                    stats[key] = stats.get(key, 0) + value
                for name in out.genres:
                    key = genre_key(name)
                    # Another request of this guild may have taken it while we waited.
                    if not key or key in issued or key in real:
                        stats["dropped_concurrent"] = stats.get("dropped_concurrent", 0) + 1
                        continue
                    issued.add(key)
                    delivered.append(name)
                    if len(delivered) == count:
                        break
        finally:
            self._in_flight -= 1
            self._requests[guild_id] -= 1
            if not self._requests[guild_id]:
                del self._requests[guild_id]
        version = self._version
        log.debug("generated %d genres for guild %s user %s", len(delivered), guild_id, user_id)
        return Delivery(
            genres=delivered,
            model_name=model_name or (version[1] if version else ""),
            model_version_id=version[0] if version else None,
            stats=stats,
            elapsed_s=time.perf_counter() - start,
        )

    async def reload(
        self, adapter_path: str | None, *, version: tuple[int, str] | None = None
    ) -> None:
        """Hot-reload the generator onto ``adapter_path``; raises when the adapter is rejected."""
        await self.generator.reload(adapter_path)
        self._version = (
            version if version is not None else await active_model_version(self.sessions)
        )

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self.generator.close()


class PipelineGenerator:
    """:class:`Generator` over ``model.pipeline.GenrePipeline`` and a worker client.

    ``client`` is a started ``model.worker`` client (local or remote); ``known`` are the real
    genre names the novelty check refuses, on top of the adapter's own fingerprint. One pipeline
    serves every request, so its running estimate of the acceptance rate (how much it
    oversamples) carries over from call to call, and concurrent `/genre new` calls share its
    rounds: one oversampled worker request for all of them, whose queue positions every caller
    hears.
    """

    def __init__(
        self,
        client: Any,
        *,
        known: Iterable[str] = (),
        fingerprint: Any = None,
        moderator: Any = None,
        pipeline_options: dict[str, Any] | None = None,
    ) -> None:
        from model.filters import Fingerprint
        from model.pipeline import GenrePipeline

        self.client = client
        self._known = Fingerprint.from_names(list(known))
        base = fingerprint if fingerprint is not None else Fingerprint()
        self.pipeline = GenrePipeline(
            client,
            base.union(self._known),
            moderator,
            **dict(pipeline_options or {}),
        )

    @property
    def fingerprint(self) -> Any:
        return self.pipeline.fingerprint

    async def generate(
        self,
        count: int,
        *,
        like: str | None,
        temperature: float | None,
        exclude: Collection[str],
        on_position: PositionCallback | None,
    ) -> GeneratorOutput:
        outcome = await self.pipeline.generate(
            count, like=like, temperature=temperature, exclude=exclude, on_position=on_position
        )
        return GeneratorOutput(list(outcome.genres), outcome.model, dict(outcome.stats))

    def health(self) -> dict[str, Any]:
        return dict(self.client.health())

    @property
    def queue_length(self) -> int:
        return int(self.client.health().get("queue_length", 0))

    async def reload(self, adapter_path: str | None) -> None:
        await self.client.reload(adapter_path)
        fingerprint = await asyncio.to_thread(load_fingerprint, adapter_path)
        if fingerprint is not None:
            self.pipeline.fingerprint = fingerprint.union(self._known)

    async def close(self) -> None:
        await self.client.close()


async def create_generator(
    config: Config,
    *,
    known: Iterable[str] = (),
    pipeline_options: dict[str, Any] | None = None,
) -> PipelineGenerator:
    """Start the configured worker client and wrap it in a :class:`PipelineGenerator`.

    Imports ``model.worker`` here, not at module level; the worker process owns torch.
    """
    from model.filters import Moderator
    from model.worker import make_client
    from model.worker.factory import sampler_spec

    fingerprint = await asyncio.to_thread(load_fingerprint, sampler_spec(config).adapter)
    client = make_client(config)
    await client.start()
    moderator: Any = None
    try:
        moderator = Moderator()
        # Load the classifier now, in a thread: its first use would block the event loop.
        await asyncio.to_thread(moderator.scores, ["warm up"])
    except Exception as exc:  # the classifier is optional
        log.warning("moderation is off: %s", exc)
    return PipelineGenerator(
        client,
        known=known,
        fingerprint=fingerprint,
        moderator=moderator,
        pipeline_options=pipeline_options,
    )
