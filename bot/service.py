"""The generation service the cogs use: a fair queue, per-guild novelty, per-guild models.

:class:`GenreService` sits between the cogs and a :class:`Generator` (the model pipeline over the
worker client in production, a scripted fake in tests). Each request first waits for a slot in
the bot's :class:`~bot.queue.FairQueue` (round-robin across guilds; the caller hears its place in
that line, then the worker's queue positions), which also refuses what could not be served in
time. It keeps, per guild, the set of genres
already issued there (loaded once from the store, then updated by every delivery) and passes it
as the ``exclude`` set, so a genre is never offered twice in one server even when requests run
concurrently; real genres are excluded by the generator's fingerprint and checked again here.

Each server generates with its own model: its active ``ModelVersion``, else the deployment's
active default, else the adapter the worker started with (see :mod:`bot.store.versions`). The
service resolves that per guild (cached for ``model_cache_s``, and dropped at once by
:meth:`GenreService.model_changed` after an activation in this process) and names it in every
request as an :class:`~model.protocol.AdapterRef`, which the worker loads on demand.

The production generator (:class:`PipelineGenerator`) imports ``model.worker`` and
``model.pipeline`` lazily; neither imports torch in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from bot.issued import IssuedNames
from bot.lineage import Lineage
from bot.metrics import BotMetrics
from bot.queue import FairQueue
from bot.store.engine import SessionMaker
from bot.store.generations import (
    Reserved,
    issued_names,
    release_generation,
    reserve_generations,
)
from bot.store.notify import ModelChangeListener, announce
from bot.store.versions import VersionInfo, serving_version
from model.artifacts import load_fingerprint
from model.protocol import AdapterRef, GenerateOptions, PositionCallback
from scraping.normalize import genre_key

if TYPE_CHECKING:
    from bot.config import Config
    from model.pipeline import GenerationOutcome

log = logging.getLogger(__name__)

# Weirdness 1..5 of `/genre new`: a plausibility band of the candidates the pipeline samples at
# its own temperature, ranked by the model's score (1 = the most plausible novel genres, 5 = the
# least plausible that still pass the filters; see model.pipeline.band_order).
WEIRDNESS_LEVELS = range(1, 6)
# Rounds of one delivery: the first, then replacements for genres the store refused because
# another request (of this process, another shard, `microgenre generate`) issued them first.
DELIVERY_ROUNDS = 3
# Seconds the start waits for the model-change listener to be connected (PostgreSQL).
LISTEN_WAIT_S = 5.0
# Seconds a guild's resolved model is reused (activations by other processes show up after it).
MODEL_CACHE_S = 30.0
# Guilds whose issued names and resolved model stay in memory; beyond it the least recently
# used idle guild is dropped (only a cache miss: its names load from the store again).
MAX_CACHED_GUILDS = 10_000


def weirdness_level(weirdness: int) -> int:
    """The plausibility band of a weirdness option (clamped to 1..5).

    >>> weirdness_level(3), weirdness_level(9), weirdness_level(0)
    (3, 5, 1)
    """
    return min(WEIRDNESS_LEVELS[-1], max(WEIRDNESS_LEVELS[0], weirdness))


class Generator(Protocol):
    """What :class:`GenreService` needs from the model side."""

    async def generate(
        self, count: int, options: GenerateOptions, *, on_position: PositionCallback | None = None
    ) -> GenerationOutcome: ...

    def health(self) -> dict[str, Any]: ...

    @property
    def queue_length(self) -> int: ...

    async def prepare(self, adapter: AdapterRef) -> None:
        """Raise unless the worker can serve ``adapter`` (before it is activated)."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class GenreRequest:
    """One ask for genres: how many, for whom and where, and how they should be made.

    >>> GenreRequest(2, guild_id=1, user_id=5, like="dub", weirdness=9).stored_options()
    {'count': 2, 'like': 'dub', 'weirdness': 9}
    """

    count: int
    guild_id: int | None
    user_id: int | None
    channel_id: int | None = None
    like: str | None = None
    # As the user chose it (1..5; the band is clamped); None: unranked.
    weirdness: int | None = None
    temperature: float | None = None
    # How it was asked for; None: a plain `/genre new` (with or without ``like``).
    lineage: Lineage | None = None

    def band(self) -> int | None:
        """The plausibility band the weirdness picks (None: unranked)."""
        return None if self.weirdness is None else weirdness_level(self.weirdness)

    def stored_options(self) -> dict[str, Any]:
        """What the store keeps with each generation of the request."""
        return {"count": self.count, "like": self.like, "weirdness": self.weirdness}


@dataclass(frozen=True)
class Delivery:
    """Genres generated for one request, each reserved for its guild in the store."""

    reserved: list[Reserved]
    model_name: str
    model_version_id: int | None = None
    stats: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0

    @property
    def genres(self) -> list[str]:
        return [r.name for r in self.reserved]


class GenreService:
    """Generation for the bot; see the module docstring."""

    def __init__(
        self,
        generator: Generator,
        sessions: SessionMaker,
        *,
        queue: FairQueue | None = None,
        metrics: BotMetrics | None = None,
        max_cached_guilds: int = MAX_CACHED_GUILDS,
        start_adapter: str | None = None,
        model_cache_s: float = MODEL_CACHE_S,
    ) -> None:
        self.generator = generator
        # The adapter folder the worker was started with: requests for it name no adapter.
        self.start_adapter = start_adapter
        self.model_cache_s = model_cache_s
        # Resolved when, and to what; least recently resolved first.
        self._models: OrderedDict[int | None, tuple[float, VersionInfo | None]] = OrderedDict()
        self.sessions = sessions
        self.queue = queue or FairQueue()
        # Counts refusals here; the cogs and the retraining manager record through it too.
        self.metrics = metrics or BotMetrics()
        self.metrics.watch_queue(self.queue)
        self.max_cached_guilds = max_cached_guilds
        # Least recently used first; a guild is evicted only when no request of it runs.
        self.issued = IssuedNames(self._issued_names, max_cached_guilds)
        self._listener = ModelChangeListener(sessions, self.model_changed)
        self._started = False
        self._in_flight = 0
        self._closed = False

    async def start(self) -> None:
        """Resolve the default model version from the store; on PostgreSQL, listen for model
        changes made by other processes."""
        self._started = True
        if self._listener.start():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._listener.listening.wait(), LISTEN_WAIT_S)
        await self.model_for(None)

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
        """``(id, name)`` of the deployment's default version as last resolved, if any."""
        version = self._models.get(None, (0.0, None))[1]
        return None if version is None else (version.id, version.name)

    async def model_for(self, guild_id: int | None) -> VersionInfo | None:
        """The version ``guild_id`` generates with (None: the worker's start adapter)."""
        cached = self._models.get(guild_id)
        now = time.monotonic()
        if cached is not None and now - cached[0] < self.model_cache_s:
            return cached[1]
        version = await serving_version(self.sessions, guild_id)
        self._models[guild_id] = (now, version)
        self._models.move_to_end(guild_id)
        # Expired entries are only ever resolved again: drop them, and keep the size bounded.
        while self._models:
            oldest, (when, _) = next(iter(self._models.items()))
            expired = now - when >= self.model_cache_s
            if not expired and len(self._models) <= self.max_cached_guilds:
                break
            del self._models[oldest]
        return version

    def adapter_for(self, version: VersionInfo | None) -> AdapterRef | None:
        """The adapter a request names for ``version`` (None: the worker's start adapter)."""
        if version is None or version.path == self.start_adapter:
            return None
        return AdapterRef(version.name, version.path)

    async def announce_model_change(self, guild_id: int | None) -> None:
        """An activation or rollback of ``guild_id`` was committed here: drop it from this
        process's cache and tell the others (PostgreSQL ``NOTIFY``)."""
        self.model_changed(guild_id)
        try:
            await announce(self.sessions, guild_id)
        except Exception:
            log.warning("telling other processes of a model change failed", exc_info=True)

    def model_changed(self, guild_id: int | None) -> None:
        """An activation or rollback for ``guild_id`` (None: the default, which every server
        without its own model uses) was committed: resolve again at the next request."""
        if guild_id is None:
            self._models.clear()
        else:
            self._models.pop(guild_id, None)

    async def prepare(self, adapter: AdapterRef) -> None:
        """Raise unless the worker can serve ``adapter`` (checked before an activation)."""
        await self.generator.prepare(adapter)

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
        return len(self.issued)

    async def _issued_names(self, guild_id: int | None) -> Collection[str]:
        return await issued_names(self.sessions, guild_id)

    async def release(self, guild_id: int | None, reserved: Iterable[Reserved]) -> None:
        """Genres delivered but never posted: their reservations go, they may be issued again."""
        for r in reserved:
            if r.generation_id is not None:
                await release_generation(self.sessions, r.generation_id)
            self.issued.discard(guild_id, r.name)

    async def deliver(
        self,
        request: GenreRequest,
        *,
        on_position: PositionCallback | None = None,
        follow_up: bool = False,
    ) -> Delivery:
        """Up to ``request.count`` genres, each reserved for its guild in the store.

        Waits for a slot in the fair queue first; raises a :class:`~bot.errors.QueueRefusedError`
        when the line is too long (a ``follow_up``, the rest of a request admitted before,
        only when its user has too many in line). Model errors (busy, crashed, could not
        generate) propagate unchanged. An empty delivery means the model found nothing new for
        this guild.
        """
        try:
            ticket = await self.queue.acquire(
                guild_id=request.guild_id,
                user_id=request.user_id,
                count=request.count,
                on_position=on_position,
                follow_up=follow_up,
            )
            reserved: list[Reserved] = []
            try:
                delivery = await self._deliver(request, on_position, reserved)
            except BaseException:
                # A later round failed: what earlier rounds reserved will never be posted.
                with contextlib.suppress(Exception):
                    await self.release(request.guild_id, reserved)
                raise
            finally:
                self.queue.release(ticket, delivered=len(reserved))
        except Exception as exc:
            self.metrics.refuse(exc)
            raise
        if not delivery.reserved:
            self.metrics.refused.labels("nothing_generated").inc()
        return delivery

    async def _deliver(
        self,
        request: GenreRequest,
        on_position: PositionCallback | None,
        reserved: list[Reserved],
    ) -> Delivery:
        """:meth:`deliver` once a slot is held; fills ``reserved`` as the store accepts names.

        Novelty is decided once, by the store's reservation: the guild's issued names are only
        a hint to the generator (``exclude``), so it wastes no samples on them. What the store
        refuses (issued first by a concurrent request, or real) joins the hint, and the rest is
        generated again, in at most :data:`DELIVERY_ROUNDS` rounds.
        """
        if not self._started:
            await self.start()
        guild_id = request.guild_id
        self._in_flight += 1
        start = time.perf_counter()
        stats: Counter[str] = Counter()
        try:
            with self.issued.request(guild_id):
                issued = await self.issued.of(guild_id)
                version = await self.model_for(guild_id)
                options = GenerateOptions(
                    like=request.like,
                    temperature=request.temperature,
                    weirdness=request.band(),
                    adapter=self.adapter_for(version),
                )
                model_name = version.name if version is not None else ""
                for _ in range(DELIVERY_ROUNDS):
                    missing = request.count - len(reserved)
                    options = dataclasses.replace(options, exclude=frozenset(issued))
                    out = await self.generator.generate(missing, options, on_position=on_position)
                    stats.update(out.stats)
                    model_name = model_name or out.model
                    if not out.genres:  # nothing new: no reservation, no other round
                        break
                    rows = await reserve_generations(
                        self.sessions,
                        out.genres,
                        guild_id=guild_id,
                        channel_id=request.channel_id,
                        user_id=request.user_id,
                        model_name=model_name,
                        model_version_id=version.id if version is not None else None,
                        options=request.stored_options(),
                        lineage=request.lineage or Lineage.of_like(request.like),
                    )
                    refused = [r for r in rows if r.generation_id is None]
                    reserved += [r for r in rows if r.generation_id is not None]
                    for r in rows:
                        issued.add(genre_key(r.name))
                    stats.update(f"refused:{r.reason}" for r in refused)
                    taken_elsewhere = any(r.reason in ("issued", "real") for r in refused)
                    if len(reserved) >= request.count or not taken_elsewhere:
                        break
        finally:
            self._in_flight -= 1
        log.debug("delivered %d genres for guild %s", len(reserved), guild_id)
        return Delivery(
            reserved=reserved,
            model_name=model_name,
            model_version_id=version.id if version is not None else None,
            stats=dict(stats),
            elapsed_s=time.perf_counter() - start,
        )

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._listener.close()
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
        self, count: int, options: GenerateOptions, *, on_position: PositionCallback | None = None
    ) -> GenerationOutcome:
        return await self.pipeline.generate(count, **options.keywords(), on_position=on_position)

    async def prepare(self, adapter: AdapterRef) -> None:
        """Check that ``adapter`` serves before it is activated, through the client that will
        serve it: load it (into the local worker, or on every configured remote server), then
        generate one genre with it, which must come back as non-empty text.

        Raises :class:`~model.worker.errors.AdapterRejectedError` with a short sentence that
        names the adapter but no folder or server address (those go to the log).
        """
        from model.pipeline import DEFAULT_TEMPERATURE
        from model.protocol import GenerationRequest
        from model.textformat import END_MARKER, build_prompt
        from model.worker.errors import AdapterRejectedError

        smoke = GenerationRequest(
            build_prompt(),
            n=1,
            temperature=DEFAULT_TEMPERATURE,
            max_tokens=self.pipeline.max_tokens,
            stop=(END_MARKER,),
            seed=0,
            adapter=adapter,
        )
        try:
            await self.client.load_adapter(adapter)
            result = await self.client.complete(smoke)
        except Exception as exc:
            log.warning("the model %s (%s) failed its check: %s", adapter.name, adapter.path, exc)
            raise AdapterRejectedError(
                f"The model {adapter.name} failed its check: {_prepare_failure(exc)}."
            ) from None
        if not any(text.strip() for text in result.texts):
            log.warning("the model %s (%s) generated only empty text", adapter.name, adapter.path)
            raise AdapterRejectedError(
                f"The model {adapter.name} failed its check: it generated nothing."
            )

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


def _prepare_failure(exc: Exception) -> str:
    """Why an adapter failed its check, in words that hold no path or address.

    >>> from model.worker.errors import WorkerBusyError
    >>> _prepare_failure(WorkerBusyError(3)), _prepare_failure(ValueError("/srv/x"))
    ('the generator is busy', 'the generator is unavailable')
    """
    from model.worker.errors import (
        AdapterRejectedError,
        InvalidRequestError,
        RemoteAuthError,
        WorkerBusyError,
        WorkerCrashedError,
        WorkerTimeoutError,
    )

    if isinstance(exc, AdapterRejectedError | InvalidRequestError):
        return "it did not load"
    if isinstance(exc, WorkerCrashedError):
        return "the generator crashed while generating with it"
    if isinstance(exc, RemoteAuthError):
        return "a generation server refused the bot's API token"
    if isinstance(exc, WorkerBusyError):
        return "the generator is busy"
    if isinstance(exc, WorkerTimeoutError | TimeoutError):
        return "the generator did not answer in time"
    return "the generator is unavailable"


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
    options = {"avoid_known": config.model.avoid_known, **dict(pipeline_options or {})}
    return PipelineGenerator(
        client,
        known=known,
        fingerprint=fingerprint,
        moderator=moderator,
        pipeline_options=options,
    )
