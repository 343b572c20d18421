"""End-to-end latency of `/genre new` through the real discord.py client, bot and worker.

    .venv/bin/python benchmarks/bench_bot.py [--config config.toml] [--users 1,32] [--burst 50]
                                             [--sampler model|scripted]

A fake Discord (``tests/fake_discord``) on 127.0.0.1 plays the gateway and REST API; the bot is
the real ``MicrogenreBot`` with the real ``GenreService`` → ``GenrePipeline`` → ``WorkerClient``
(one supervised model process with dynamic batching) and a migrated SQLite store in a temporary
folder. Measured:

* for each level L in ``--users``: L different users send `/genre new count:1` at the same time;
  the time from INTERACTION_CREATE to the bot's deferral and to the first genre message posted
  (p50 / p95 / max). The per-guild cap is raised to L for this part, so it measures the model,
  not the cap;
* ``--burst`` N: N concurrent `/genre new` in one guild with the configured per-guild cap: the
  slowest deferral (Discord's deadline is 3 s), how many got genres and how many were told to
  try again, and whether any genre was issued twice.

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

    fake = FakeDiscord()
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
                bot=dataclasses.replace(base.bot, cooldown_s=0.0),
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
            results["burst"] = await burst(fake, config, sessions, generator, args.burst)
    finally:
        await generator.close()
        await fake.stop()
        await engine.dispose()
    return results


@contextlib.asynccontextmanager
async def bot_running(config: Config, sessions: Any, generator: Any) -> Any:
    from bot.app import make_bot
    from bot.service import GenreService

    service = GenreService(generator, sessions)
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


async def burst(
    fake: FakeDiscord, config: Config, sessions: Any, generator: Any, n: int
) -> dict[str, Any]:
    async with bot_running(config, sessions, generator):
        members = [fake.member(f"burst{i}") for i in range(n)]
        interactions = await asyncio.gather(
            *(fake.invoke(m, "genre", "new", {"count": 1}) for m in members)
        )
        await fake.wait_for(lambda: all(finished(fake, i) for i in interactions), within=600)
        defers = [(deferred_at(fake, i) or float("inf")) - i.sent_at for i in interactions]
        answered = [i for i in interactions if first_genre_at(fake, i.token) is not None]
        genres = [
            str(c.json["content"])
            for i in answered
            for c in fake.calls
            if c.method == "POST"
            and c.path.endswith(f"/{i.token}")
            and isinstance(c.json, dict)
            and str(c.json.get("content", "")).startswith("🎵")
        ]
    return {
        "requests": n,
        "generation_slots": config.bot.generation_slots,
        "all_deferred_within_3s": max(defers) < 3.0,
        "slowest_defer_s": round(max(defers), 3),
        "answered_with_genres": len(answered),
        "told_to_retry": n - len(answered),
        "duplicate_genres": len(genres) - len(set(genres)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=None)
    parser.add_argument("--users", default="1,32", help="Concurrency levels, e.g. 1,32.")
    parser.add_argument("--rounds", type=int, default=3, help="Rounds per level.")
    parser.add_argument("--burst", type=int, default=50)
    parser.add_argument("--sampler", choices=("model", "scripted"), default="model")
    parser.add_argument(
        "--min-request",
        type=int,
        default=0,
        help="GenrePipeline min_request (completions asked per request); 0: its default.",
    )
    parser.add_argument("--json", dest="json_path", default=None)
    args = parser.parse_args()
    args.levels = [int(x) for x in args.users.split(",") if x.strip()]
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
        print("burst:", json.dumps(results["burst"]))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
