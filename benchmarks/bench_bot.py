"""End-to-end latency of `/genre new` through the real discord.py client, bot and worker.

    .venv/bin/python benchmarks/bench_bot.py [--config config.toml] [--users 1,32] [--burst 50]
        [--guilds 1] [--channels-per-guild 4] [--probe-after 5] [--clicks 0]
        [--sampler model|scripted] [--json PATH]

A fake Discord (``tests/fake_discord``) on 127.0.0.1 plays the gateway and REST API; the bot is
the real ``MicrogenreBot`` with the real ``GenreService`` → ``GenrePipeline`` → ``WorkerClient``
(one supervised model process with dynamic batching) and a migrated SQLite store in a temporary
folder. Measured:

* for each level L in ``--users``: L different users send `/genre new count:1` at the same time;
  the time from INTERACTION_CREATE to the bot's deferral and to the first genre message posted
  (p50 / p95 / max). ``[bot] generation_slots`` is raised to L for this part, so it measures
  the model, not the queue;
* ``--burst`` N (``--users 0`` for only this): N different users send `/genre new count:1` at
  once, spread round-robin over ``--guilds`` servers of ``--channels-per-guild`` channels, with
  the configured fair queue (``[bot] generation_slots``, ``max_wait_s``, the caps) and the fake's
  rate limits on; ``--probe-after`` S seconds in, the lone user of one more server asks too.
  Checked against the burst target (each PASS/FAIL in the JSON's ``burst.targets``): at least
  95 % get their genre, all within 60 s; every acknowledgement under 3 s; no genre twice in a
  server; the probe answered in under 5 s; fewer than 20 responses 429 (counted until the bot's
  vote reactions are all added).

* ``--clicks`` N (with ``--users 0 --burst 0`` for only this): one genre is posted in every
  channel of ``--guilds`` servers, then N different users click its "More like this" at once,
  spread round-robin over those messages, under the fake's rate limits. Each click asks for 3
  variations posted as replies in the genre's channel (5 messages per 5 s per channel). Checked
  against the same burst targets (``clicks.targets``): at least 95 % served (a first reply),
  all within 60 s, every acknowledgement under 3 s, no genre twice in a server, fewer than 20
  responses 429; also reported: p50 of the first reply, and when all 3 replies were posted.

``--sampler model`` (default) serves the configured model (``[model]``, else the shipped default
adapter); ``--sampler scripted`` a torch-free stand-in answering after 0.2 s per batch, for
measuring the bot's own overhead. Prints a table; ``--json PATH`` also writes the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bot.config import Config, load_config  # noqa: E402
from tests.fake_discord import FakeDiscord  # noqa: E402
from tests.fake_discord.limits import Limit, RateLimits  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50_s": round(percentile(values, 0.5), 3),
        "p95_s": round(percentile(values, 0.95), 3),
        "max_s": round(max(values), 3) if values else float("nan"),
        "mean_s": round(statistics.fmean(values), 3) if values else float("nan"),
    }


async def make_generator(
    config: Config, sampler: str, known: list[str], options: dict[str, Any]
) -> Any:
    from bot.service import PipelineGenerator, create_generator
    from model.worker import WorkerClient
    from model.worker.factory import sampler_spec

    if sampler == "model":
        return await create_generator(config, known=known, pipeline_options=options)
    from tests.bot.scripted_sampler import slow_factory

    client = WorkerClient(sampler_spec(config), config.worker, sampler_factory=slow_factory)
    await client.start()
    return PipelineGenerator(client, known=known, pipeline_options=options)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from bot.store import schema
    from bot.store.engine import create_engine, create_sessionmaker
    from bot.store.generations import real_genre_names

    base = load_config(args.config)
    tmp = Path(tempfile.mkdtemp(prefix="bench-bot-"))
    url = f"sqlite+aiosqlite:///{tmp / 'bench.db'}"
    await asyncio.to_thread(schema.upgrade, url, "head")
    engine = create_engine(url)
    sessions = create_sessionmaker(engine)
    if base.database.url or (base.data_dir / "microgenre.db").is_file():
        # Real genres for the novelty check, from the configured store.
        source = create_engine(base.database_url)
        known = await real_genre_names(create_sessionmaker(source))
        await source.dispose()
    else:
        known = []

    plan = BurstPlan(args.burst, args.guilds, args.channels_per_guild, args.probe_after)
    limits = RateLimits(channel_webhooks=Limit(30, 60.0) if args.channel_webhook_limit else None)
    fake = FakeDiscord(limits=limits)
    plan.add_to(fake)
    await fake.start()
    import yarl
    from discord.gateway import DiscordWebSocket
    from discord.http import Route

    Route.BASE = fake.api_base
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)

    t0 = time.perf_counter()
    options = {"min_request": args.min_request} if args.min_request else {}
    generator = await make_generator(base, args.sampler, known, options)
    startup_s = time.perf_counter() - t0
    model_name = generator.client.model_name
    results: dict[str, Any] = {
        "sampler": args.sampler,
        "model": model_name,
        "adapter": generator.client.spec.adapter,
        "worker_start_s": round(startup_s, 2),
        "known_genres": len(known),
        "pipeline_options": options,
        "levels": {},
    }
    try:
        for level in args.levels:
            config = dataclasses.replace(
                base,
                paths=dataclasses.replace(base.paths, data_dir=str(tmp / f"data-{level}")),
                bot=dataclasses.replace(
                    base.bot,
                    cooldown_s=0.0,
                    generation_slots=max(level, base.bot.generation_slots),
                ),
            )
            results["levels"][str(level)] = await measure(
                fake, config, sessions, generator, users=level, rounds=args.rounds
            )
        if args.burst:
            config = dataclasses.replace(
                base,
                paths=dataclasses.replace(base.paths, data_dir=str(tmp / "data-burst")),
                bot=dataclasses.replace(base.bot, cooldown_s=0.0),
            )
            results["burst"] = await burst(fake, config, sessions, generator, plan)
        if args.clicks:
            config = dataclasses.replace(
                base,
                paths=dataclasses.replace(base.paths, data_dir=str(tmp / "data-clicks")),
                bot=dataclasses.replace(base.bot, cooldown_s=0.0),
            )
            clicks = dataclasses.replace(plan, users=args.clicks)
            results["clicks"] = await click_burst(fake, config, sessions, generator, clicks)
    finally:
        await generator.close()
        await fake.stop()
        await engine.dispose()
    return results


@contextlib.asynccontextmanager
async def bot_running(config: Config, sessions: Any, generator: Any) -> Any:
    from bot.app import make_bot
    from bot.queue import FairQueue, QueueSettings
    from bot.service import GenreService

    # The fair queue from [bot], as `microgenre bot` builds it.
    queue = FairQueue(QueueSettings.from_config(config.bot))
    service = GenreService(generator, sessions, queue=queue)
    await service.start()
    bot = make_bot(config, sessions, service, guild_ready_timeout=0.05)
    task = asyncio.get_running_loop().create_task(bot.start("bench-token"))
    await asyncio.wait_for(bot.wait_until_ready(), 30)
    try:
        yield bot
    finally:
        await bot.close()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def first_genre_at(fake: FakeDiscord, token: str) -> float | None:
    times = [
        c.at
        for c in fake.calls
        if c.method == "POST"
        and c.path.endswith(f"/{token}")
        and isinstance(c.json, dict)
        and str(c.json.get("content", "")).startswith("🎵")
    ]
    return min(times) if times else None


def all_finished(fake: FakeDiscord, interactions: list[Any]) -> bool:
    return all(finished(fake, i) for i in interactions)


def failure_reason(fake: FakeDiscord, interaction: Any) -> str | None:
    """The ephemeral message an unanswered interaction got (first 60 characters)."""
    for c in fake.calls:
        if (
            c.method == "POST"
            and interaction.token in c.path
            and isinstance(c.json, dict)
            and int(c.json.get("flags") or 0) & 64
        ):
            return str(c.json.get("content", ""))[:60]
    return None


def deferred_at(fake: FakeDiscord, interaction: Any) -> float | None:
    calls = fake.calls_matching("POST", f"/interactions/{interaction.id}/")
    return calls[0].at if calls else None


def finished(fake: FakeDiscord, interaction: Any) -> bool:
    if first_genre_at(fake, interaction.token) is not None:
        return True
    return any(
        c.method == "POST"
        and interaction.token in c.path
        and isinstance(c.json, dict)
        and int(c.json.get("flags") or 0) & 64
        for c in fake.calls
    )


async def measure(
    fake: FakeDiscord, config: Config, sessions: Any, generator: Any, *, users: int, rounds: int
) -> dict[str, Any]:
    first: list[float] = []
    defer: list[float] = []
    failed = 0
    reasons: dict[str, int] = {}
    started = time.perf_counter()
    async with bot_running(config, sessions, generator):
        for _ in range(rounds):
            members = [fake.member(f"user{i}") for i in range(users)]
            interactions = await asyncio.gather(
                *(fake.invoke(m, "genre", "new", {"count": 1}) for m in members)
            )
            await fake.wait_for(partial(all_finished, fake, list(interactions)), within=600)
            for i in interactions:
                d = deferred_at(fake, i)
                g = first_genre_at(fake, i.token)
                if d is not None:
                    defer.append(d - i.sent_at)
                if g is None:
                    failed += 1
                    reason = failure_reason(fake, i) or "no answer"
                    reasons[reason] = reasons.get(reason, 0) + 1
                else:
                    first.append(g - i.sent_at)
    return {
        "requests": users * rounds,
        "failed": failed,
        "failure_reasons": reasons,
        "wall_s": round(time.perf_counter() - started, 2),
        "deferred": summary(defer),
        "first_genre": summary(first),
    }


@dataclasses.dataclass(frozen=True)
class BurstPlan:
    """Who asks where: ``users`` members spread round-robin over ``guilds`` servers of
    ``channels`` text channels each, and one more server whose lone member asks
    ``probe_after_s`` seconds into the burst (negative: no probe).

    >>> plan = BurstPlan(users=5, guilds=2, channels=2, probe_after_s=5.0)
    >>> plan.seats()
    [(1000, 2000), (1001, 2100), (1000, 2001), (1001, 2101), (1000, 2000)]
    >>> plan.probe_seat
    (1002, 2200)
    """

    users: int
    guilds: int = 1
    channels: int = 4
    probe_after_s: float = 5.0

    @staticmethod
    def channel(guild_index: int, channel_index: int) -> int:
        return 2000 + 100 * guild_index + channel_index

    def seats(self) -> list[tuple[int, int]]:
        """(guild id, channel id) of each burst user, in order."""
        return [
            (
                1000 + u % self.guilds,
                self.channel(u % self.guilds, (u // self.guilds) % self.channels),
            )
            for u in range(self.users)
        ]

    @property
    def probe_seat(self) -> tuple[int, int]:
        return 1000 + self.guilds, self.channel(self.guilds, 0)

    def add_to(self, fake: FakeDiscord) -> None:
        """The servers and channels of the plan (before the bot connects)."""
        for g in range(self.guilds + 1):
            for c in range(self.channels if g < self.guilds else 1):
                if g == 0:
                    fake.add_channel(self.channel(g, c))
                else:
                    fake.add_guild(1000 + g, self.channel(g, c))


@dataclasses.dataclass
class Outcome:
    """What one interaction got: its first genre message (time) or its private refusal."""

    genres: list[str] = dataclasses.field(default_factory=list)
    genre_at: float | None = None
    refusal: str | None = None


def outcomes(fake: FakeDiscord) -> dict[str, Outcome]:
    """Every interaction's outcome so far, from one pass over the posted messages.

    A message's time is that of the follow-up call that created it (the fake records calls).
    """
    found: dict[str, Outcome] = {}
    for message in fake.messages.values():
        token = message.get("_token")
        if token is None or message.get("_deleted"):
            continue
        outcome = found.setdefault(str(token), Outcome())
        content = str(message.get("content", ""))
        if content.startswith("🎵"):
            outcome.genres.append(content)
        elif message.get("_ephemeral") and outcome.refusal is None:
            outcome.refusal = content[:60]
    return found


def genre_times(fake: FakeDiscord) -> dict[str, float]:
    """Token -> when its first genre follow-up arrived (answered 200)."""
    times: dict[str, float] = {}
    for c in fake.calls:
        if (
            c.method == "POST"
            and c.path.startswith("/webhooks/")
            and c.status == 200
            and isinstance(c.json, dict)
            and str(c.json.get("content", "")).startswith("🎵")
        ):
            token = c.path.rsplit("/", 1)[-1]
            times.setdefault(token, c.at)
    return times


def settled(fake: FakeDiscord, tokens: list[str]) -> bool:
    done = outcomes(fake)
    return all(t in done and (done[t].genres or done[t].refusal) for t in tokens)


def reactions_done(fake: FakeDiscord, tokens: set[str], per_message: int) -> bool:
    """Every genre message of ``tokens`` carries the bot's ``per_message`` reactions."""
    bot_id = fake.bot_user.id
    for mid, message in fake.messages.items():
        if message.get("_token") in tokens and str(message.get("content", "")).startswith("🎵"):
            given = fake.reactions.get(mid, {})
            if sum(bot_id in users for users in given.values()) < per_message:
                return False
    return True


def target(value: float | None, limit: float, ok: bool) -> dict[str, Any]:
    return {"value": value, "target": limit, "pass": bool(ok)}


async def burst(
    fake: FakeDiscord, config: Config, sessions: Any, generator: Any, plan: BurstPlan
) -> dict[str, Any]:
    from bot.cogs.common import REACTIONS

    n = plan.users
    async with bot_running(config, sessions, generator):
        seats = plan.seats()
        members = [fake.member(f"burst{i}") for i in range(n)]
        limited_before = fake.too_many_requests
        started = time.monotonic()

        async def probe() -> Any:
            await asyncio.sleep(plan.probe_after_s)
            guild, channel = plan.probe_seat
            return await fake.invoke(
                fake.member("probe"),
                "genre",
                "new",
                {"count": 1},
                guild_id=guild,
                channel_id=channel,
            )

        probe_task = asyncio.create_task(probe()) if plan.probe_after_s >= 0 else None
        interactions = await asyncio.gather(
            *(
                fake.invoke(m, "genre", "new", {"count": 1}, guild_id=g, channel_id=c)
                for m, (g, c) in zip(members, seats, strict=True)
            )
        )
        probe_interaction = await probe_task if probe_task else None
        everyone = list(interactions) + ([probe_interaction] if probe_interaction else [])
        tokens = [i.token for i in everyone]
        await fake.wait_for(partial(settled, fake, tokens), within=600)
        answered_at = time.monotonic()
        answered_tokens = {t for t, o in outcomes(fake).items() if o.genres and t in tokens}
        with contextlib.suppress(TimeoutError):
            await fake.wait_for(
                partial(reactions_done, fake, answered_tokens, len(REACTIONS)), within=120
            )
        reactions_at = time.monotonic()
        too_many = fake.too_many_requests - limited_before
        limited_by_scope = dict(fake.rate_limited)
    done = outcomes(fake)
    times = genre_times(fake)
    shared = fake.limits.channel_webhooks if fake.limits else None
    acks = [i.ack_latency if i.ack_latency is not None else float("inf") for i in interactions]
    latencies = [times[i.token] - i.sent_at for i in interactions if i.token in times]
    refusals: dict[str, int] = {}
    for i in interactions:
        if not done[i.token].genres:
            key = done[i.token].refusal or "no answer"
            refusals[key] = refusals.get(key, 0) + 1
    duplicates = 0
    for guild in {g for g, _ in seats}:
        names = [name for i in interactions if i.guild_id == guild for name in done[i.token].genres]
        duplicates += len(names) - len(set(names))
    probe_s = (
        times[probe_interaction.token] - probe_interaction.sent_at
        if probe_interaction is not None and probe_interaction.token in times
        else None
    )
    need = math.ceil(0.95 * n)
    slowest = max(latencies) if latencies else float("inf")
    targets = {
        "answered": target(len(latencies), need, len(latencies) >= need),
        "slowest_answer_s": target(round(slowest, 2), 60.0, slowest < 60.0),
        "slowest_ack_s": target(round(max(acks), 3), 3.0, max(acks) < 3.0),
        "duplicate_genres": target(duplicates, 0, duplicates == 0),
        "too_many_requests": target(too_many, 20, too_many < 20),
    }
    if probe_interaction is not None:
        probe_ok = probe_s is not None and probe_s < 5.0
        targets["probe_answer_s"] = target(round(probe_s, 2) if probe_s else None, 5.0, probe_ok)
    return {
        "requests": n,
        "guilds": plan.guilds,
        "channels_per_guild": plan.channels,
        "probe_after_s": plan.probe_after_s,
        "channel_webhook_limit": dataclasses.asdict(shared) if shared else None,
        "generation_slots": config.bot.generation_slots,
        "worker": {
            "batch_window_ms": config.worker.batch_window_ms,
            "max_batch_size": config.worker.max_batch_size,
        },
        "answered": len(latencies),
        "refused": refusals,
        "answer": summary(latencies),
        "ack": summary(acks),
        "all_answered_after_s": round(answered_at - started, 2),
        "reactions_done_after_s": round(reactions_at - started, 2),
        "too_many_requests": too_many,
        "rate_limited_by_scope_total": limited_by_scope,
        "probe_answer_s": None if probe_s is None else round(probe_s, 2),
        "probe_refusal": None
        if probe_interaction is None
        else done.get(probe_interaction.token, Outcome()).refusal,
        "targets": targets,
        "pass": all(t["pass"] for t in targets.values()),
    }


async def click_burst(
    fake: FakeDiscord, config: Config, sessions: Any, generator: Any, plan: BurstPlan
) -> dict[str, Any]:
    """``plan.users`` "More like this" clicks at once on one genre per channel (see the module
    docstring)."""
    from sqlalchemy import func, select

    from bot.store.models import Generation

    async with bot_running(config, sessions, generator):
        seats = sorted(set(plan.seats()))
        posts = [
            await fake.invoke(
                fake.member(f"poster{i}"), "genre", "new", {"count": 1}, guild_id=g, channel_id=c
            )
            for i, (g, c) in enumerate(seats)
        ]
        await fake.wait_for(lambda: all(fake.followups(p) for p in posts), within=120)
        refused = [fake.ephemerals(p) for p in posts if fake.ephemerals(p)]
        if refused:
            raise RuntimeError(f"a source genre was refused: {refused[0]}")
        sources: dict[tuple[int, int], int] = {}
        for seat, post in zip(seats, posts, strict=True):
            sources[seat] = next(int(m["id"]) for m in fake.followups(post) if m["components"])
        # Recorded and reacted to: the sources' commands are done.
        await fake.wait_for(
            lambda: all(len(fake.reactions.get(m, {})) == 3 for m in sources.values()), within=60
        )
        async with sessions.begin() as session:
            ids = dict(
                (
                    await session.execute(
                        select(Generation.message_id, Generation.id).where(
                            Generation.message_id.in_(list(sources.values()))
                        )
                    )
                ).all()
            )
        await asyncio.sleep(1.0)  # a fresh window for every rate limit
        limited_before = fake.too_many_requests
        scopes_before = dict(fake.rate_limited)
        members = [fake.member(f"clicker{i}") for i in range(plan.users)]
        targets = [sources[seat] for seat in plan.seats()]
        backend = CountingBackend.install(generator)
        started = time.monotonic()
        clicks = await asyncio.gather(
            *(
                fake.click(m, source, f"mg:more:{ids[source]}")
                for m, source in zip(members, targets, strict=True)
            )
        )

        per_source = {t: targets.count(t) for t in set(targets)}

        def settled() -> bool:
            # Every source has 3 replies per click on it, bar the clicks answered privately.
            refused = {t: 0 for t in per_source}
            for c in clicks:
                if fake.ephemerals(c):
                    refused[c.message_id] += 1
            return all(
                len(fake.replies_to(t)) >= 3 * (n - refused[t]) for t, n in per_source.items()
            )

        with contextlib.suppress(TimeoutError):
            await fake.wait_for(settled, within=300)
        settled_at = time.monotonic()
        # The store records a reply's message id just after it is posted: wait for the last.
        replied = sum(len(fake.replies_to(t)) for t in per_source)
        for _ in range(100):
            async with sessions.begin() as session:
                recorded = await session.scalar(
                    select(func.count(Generation.id)).where(
                        Generation.lineage_kind == "variation", Generation.message_id.is_not(None)
                    )
                )
            if (recorded or 0) >= replied:
                break
            await asyncio.sleep(0.1)
        too_many = fake.too_many_requests - limited_before
        by_scope = {k: v - scopes_before.get(k, 0) for k, v in fake.rate_limited.items()}
        by_route: dict[str, int] = {}
        for call in fake.calls:
            if call.status == 429 and call.at >= started:
                route = f"{call.method} " + "/".join(
                    "{id}" if part.isdigit() or len(part) > 40 else part
                    for part in call.path.split("/")
                )
                by_route[route] = by_route.get(route, 0) + 1
    async with sessions.begin() as session:
        rows = (
            await session.execute(
                select(Generation.user_id, Generation.message_id).where(
                    Generation.lineage_kind == "variation", Generation.message_id.is_not(None)
                )
            )
        ).all()
    # Each clicker clicked once: their variations are their click's replies.
    posted: dict[int, list[float]] = {}
    for user_id, message_id in rows:
        posted.setdefault(int(user_id), []).append(float(fake.messages[message_id]["_at"]))
    firsts, alls, refusals, short = [], [], {}, {}
    for c in clicks:
        times = posted.get(c.user.id, [])
        if times:
            firsts.append(min(times) - c.sent_at)
        if len(times) >= 3:
            alls.append(max(times) - c.sent_at)
        elif times:  # served, but fewer than 3: what the clicker was told
            key = (fake.ephemerals(c) or ["nothing"])[0][:80]
            short[key] = short.get(key, 0) + 1
        if not times:
            key = (fake.ephemerals(c) or ["no answer"])[0][:60]
            refusals[key] = refusals.get(key, 0) + 1
    duplicates = 0
    for guild in {g for g, _ in seats}:
        names = [
            str(m["content"])
            for m in fake.messages.values()
            if m.get("message_reference") and int(m["guild_id"]) == guild
        ]
        duplicates += len(names) - len(set(names))
    acks = [c.ack_latency if c.ack_latency is not None else float("inf") for c in clicks]
    need = math.ceil(0.95 * plan.users)
    slowest = max(firsts) if firsts else float("inf")
    checks = {
        "served": target(len(firsts), need, len(firsts) >= need),
        "slowest_first_reply_s": target(round(slowest, 2), 60.0, slowest < 60.0),
        "slowest_ack_s": target(round(max(acks), 3), 3.0, max(acks) < 3.0),
        "duplicate_genres": target(duplicates, 0, duplicates == 0),
        "too_many_requests": target(too_many, 20, too_many < 20),
    }
    return {
        "clicks": plan.users,
        "guilds": plan.guilds,
        "channels_per_guild": plan.channels,
        "served": len(firsts),
        "all_three": len(alls),
        "refused": refusals,
        "fewer_than_three": short,
        "first_reply": summary(firsts),
        "all_replies": summary(alls),
        "ack": summary(acks),
        "settled_after_s": round(settled_at - started, 2),
        "too_many_requests": too_many,
        "too_many_by_route": by_route,
        "too_many_by_scope": {k: v for k, v in by_scope.items() if v},
        "backend": backend.summary(),
        "targets": checks,
        "pass": all(t["pass"] for t in checks.values()),
    }


class CountingBackend:
    """Wraps the pipeline's backend to count what a burst asked the model for."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.requests = 0
        self.completions = 0
        self.tokens = 0
        self.first_at: float | None = None
        self.last_at = 0.0

    @classmethod
    def install(cls, generator: Any) -> CountingBackend:
        pipeline = generator.pipeline
        inner = pipeline.backend
        counting = cls(inner.inner if isinstance(inner, CountingBackend) else inner)
        pipeline.backend = counting
        return counting

    async def complete(self, request: Any, **kwargs: Any) -> Any:
        if self.first_at is None:
            self.first_at = time.monotonic()
        self.requests += 1
        self.completions += request.n
        result = await self.inner.complete(request, **kwargs)
        self.tokens += result.completion_tokens
        self.last_at = time.monotonic()
        return result

    def summary(self) -> dict[str, Any]:
        span = self.last_at - self.first_at if self.first_at is not None else 0.0
        return {
            "requests": self.requests,
            "completions": self.completions,
            "completion_tokens": self.tokens,
            "first_to_last_answer_s": round(span, 2),
            "completions_per_s": round(self.completions / span, 1) if span else None,
        }

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def print_clicks(row: dict[str, Any]) -> None:
    print(
        f"clicks: {row['clicks']} 'More like this' in {row['guilds']} servers x "
        f"{row['channels_per_guild']} channels, refused {json.dumps(row['refused'])}"
    )
    for name, t in row["targets"].items():
        print(
            f"  {name:<22} {t['value']!s:>8}  target {t['target']!s:>5}  "
            f"{'PASS' if t['pass'] else 'FAIL'}"
        )
    print(
        f"  first reply {json.dumps(row['first_reply'])}; all 3 replies for "
        f"{row['all_three']} clicks, {json.dumps(row['all_replies'])}"
    )
    if row["fewer_than_three"]:
        print(f"  served with fewer than 3, and why: {json.dumps(row['fewer_than_three'])}")
    print(f"  asked of the model: {json.dumps(row['backend'])}")
    if row["too_many_by_route"]:
        print(
            f"  429s by route: {json.dumps(row['too_many_by_route'])}; "
            f"by scope: {json.dumps(row['too_many_by_scope'])}"
        )


def print_burst(row: dict[str, Any]) -> None:
    print(
        f"burst: {row['requests']} users in {row['guilds']} servers x "
        f"{row['channels_per_guild']} channels, generation_slots={row['generation_slots']}, "
        f"refused {json.dumps(row['refused'])}"
    )
    for name, t in row["targets"].items():
        print(
            f"  {name:<20} {t['value']!s:>8}  target {t['target']!s:>5}  "
            f"{'PASS' if t['pass'] else 'FAIL'}"
        )
    print(
        f"  answer latency {json.dumps(row['answer'])}; reactions done after "
        f"{row['reactions_done_after_s']} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=None)
    parser.add_argument("--users", default="1,32", help="Concurrency levels, e.g. 1,32.")
    parser.add_argument("--rounds", type=int, default=3, help="Rounds per level.")
    parser.add_argument("--burst", type=int, default=50, help="Users in the burst; 0: none.")
    parser.add_argument("--guilds", type=int, default=1, help="Servers the burst is spread over.")
    parser.add_argument("--channels-per-guild", type=int, default=4)
    parser.add_argument(
        "--probe-after",
        type=float,
        default=5.0,
        help="Seconds into the burst when a third server's lone user asks; negative: never.",
    )
    parser.add_argument(
        "--channel-webhook-limit",
        action="store_true",
        help="Also limit webhook messages (follow-ups) to 30 per 60 s per channel.",
    )
    parser.add_argument(
        "--clicks",
        type=int,
        default=0,
        help="'More like this' clicks at once, over --guilds servers; 0: none.",
    )
    parser.add_argument("--sampler", choices=("model", "scripted"), default="model")
    parser.add_argument(
        "--min-request",
        type=int,
        default=0,
        help="GenrePipeline min_request (completions asked per request); 0: its default.",
    )
    parser.add_argument("--json", dest="json_path", default=None)
    args = parser.parse_args()
    args.levels = [int(x) for x in args.users.split(",") if x.strip() and int(x) > 0]
    results = asyncio.run(run(args))
    print(
        f"sampler={results['sampler']} model={results['model']} "
        f"adapter={results['adapter']} worker start {results['worker_start_s']} s, "
        f"{results['known_genres']} known genres"
    )
    columns = ("defer p95", "first p50", "first p95")
    print(f"{'users':>6} {'requests':>9} " + " ".join(f"{c:>10}" for c in columns) + " failed")
    for level, row in results["levels"].items():
        print(
            f"{level:>6} {row['requests']:>9} {row['deferred']['p95_s']:>10} "
            f"{row['first_genre']['p50_s']:>10} {row['first_genre']['p95_s']:>10} "
            f"{row['failed']:>6}"
        )
    for level, row in results["levels"].items():
        if row["failure_reasons"]:
            print(f"failures at {level} users:", json.dumps(row["failure_reasons"]))
    if "burst" in results:
        print_burst(results["burst"])
    if "clicks" in results:
        print_clicks(results["clicks"])
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
