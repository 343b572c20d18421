"""The bot's worst event-loop stall during a 32-user `/genre new` burst and a `/genre map`.

    .venv/bin/python benchmarks/bench_loop.py [--users 32] [--count 5] [--runs 3]
                                              [--positions CSV] [--json PATH]

The real bot (real discord.py against ``tests/fake_discord``) with the real ``GenreService`` →
``GenrePipeline`` (the real moderation classifier and the shipped adapter's fingerprint, plus the
map's real genres as known names) over a scripted backend: each request answers after 50 ms
with ``n`` candidates, 95 % of them real genres, so the pipeline's acceptance estimate drops and
its requests grow to ``max_request`` = 512 candidates, as with a model that repeats its training
data. Every Noise positions (``--positions``, a CSV with ``genre_name,top_pixel,left_pixel``;
by default the shared data folder's, else synthetic names) fill the store for `/genre map`.

While the burst runs, a sampler task sleeps 10 ms in a loop and records how late it wakes up:
that overshoot is how long the event loop was blocked. Reported: the worst, p99 and p50 stall
(ms), how many ticks woke more than 50 ms late, the number of samples and the burst's wall
time, per run, and the median of each over the runs. On a busy machine the worst stall mostly
measures the OS scheduler: compare p99 and ``over_50ms`` too, and run before/after in turn.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_POSITIONS = REPO.parent / "shared" / "data" / "everynoise" / "wildanazz_enao-genres.csv"
TICK_S = 0.010
WORDS = ["glass", "harp", "dub", "moss", "tidal", "velvet", "sludge", "polder", "grime", "swamp"]


class LagSampler:
    """Sleeps ``TICK_S`` in a loop; each overshoot is a stall of the event loop."""

    def __init__(self) -> None:
        self.stalls_ms: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(TICK_S)
            self.stalls_ms.append(max(0.0, (time.perf_counter() - start - TICK_S) * 1000))

    @contextlib.asynccontextmanager
    async def sampling(self) -> AsyncIterator[LagSampler]:
        self._task = asyncio.create_task(self._run())
        try:
            yield self
        finally:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def summary(self) -> dict[str, float]:
        ordered = sorted(self.stalls_ms) or [float("nan")]
        return {
            "worst_ms": round(ordered[-1], 1),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 1),
            "p50_ms": round(statistics.median(ordered), 1),
            "over_50ms": sum(s > 50 for s in self.stalls_ms),
            "samples": len(self.stalls_ms),
        }


class ScriptedBackend:
    """A worker stand-in: 50 ms per request, mostly real genres, some new two-word names."""

    def __init__(self, real: list[str], seed: int) -> None:
        self.real = real
        self.random = random.Random(seed)
        self.vocab = sorted({w for name in real for w in name.split()}) + WORDS
        self.requests: list[int] = []
        self.model_name = "scripted"

    def _candidate(self) -> str:
        if self.random.random() < 0.95:
            return self.random.choice(self.real)
        return " ".join([*self.random.sample(self.vocab, 2), self.random.choice(WORDS)])

    async def complete(self, request: Any, **_: Any) -> Any:
        from model.protocol import GenerationResult

        self.requests.append(request.n)
        await asyncio.sleep(0.05)
        texts = tuple(" " + self._candidate() for _ in range(request.n))
        return GenerationResult(texts=texts, model="scripted", finished=tuple([True] * len(texts)))

    def health(self) -> dict[str, Any]:
        return {"state": "ready", "restarts": 0, "queue_length": 0}

    async def reload(self, adapter_path: str | None) -> None:
        return None

    async def close(self) -> None:
        return None


def load_positions(path: Path | None) -> dict[str, tuple[float, float]]:
    if path is not None and path.is_file():
        with path.open(encoding="utf-8") as f:
            return {
                row["genre_name"]: (float(row["left_pixel"]), float(row["top_pixel"]))
                for row in csv.DictReader(f)
                if row.get("genre_name")
            }
    rng = random.Random(0)
    names = {f"{a} {b}" for a in WORDS for b in WORDS if a != b}
    return {name: (rng.uniform(0, 1600), rng.uniform(0, 20000)) for name in sorted(names)}


async def one_run(
    args: argparse.Namespace, positions: dict[str, tuple[float, float]], run: int
) -> dict[str, Any]:
    from bot.service import PipelineGenerator
    from bot.store import schema
    from bot.store.engine import create_engine, create_sessionmaker
    from bot.store.genres import import_records
    from model.artifacts import default_adapter, load_fingerprint
    from model.filters import Moderator
    from scraping.records import GenreRecord
    from tests.bot.fakes import make_config, running_bot
    from tests.fake_discord import FakeDiscord

    tmp = Path(tempfile.mkdtemp(prefix="bench-loop-"))
    url = f"sqlite+aiosqlite:///{tmp / 'bench.db'}"
    await asyncio.to_thread(schema.upgrade, url, "head")
    engine = create_engine(url)
    sessions = create_sessionmaker(engine)
    await import_records(
        sessions,
        [
            GenreRecord.create(n, "everynoise", extra={"x": x, "y": y})
            for n, (x, y) in positions.items()
        ],
    )
    moderator = Moderator()
    await asyncio.to_thread(moderator.scores, ["warm up"])
    fingerprint = await asyncio.to_thread(load_fingerprint, default_adapter())
    backend = ScriptedBackend(sorted(positions), seed=run)
    generator = PipelineGenerator(
        backend,
        known=sorted(positions),
        fingerprint=fingerprint,
        moderator=moderator,
        pipeline_options={"max_request": 512},
    )
    fake = FakeDiscord()
    await fake.start()
    import yarl
    from discord.gateway import DiscordWebSocket
    from discord.http import Route

    Route.BASE = fake.api_base
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)
    config = make_config(tmp, generation_slots=args.users)
    sampler = LagSampler()
    try:
        async with running_bot(config, sessions, generator):  # type: ignore[arg-type]
            users = [fake.member(f"user{i}") for i in range(args.users)]
            start = time.perf_counter()
            async with sampler.sampling():
                maps = [fake.invoke(users[0], "genre", "map", {})] if args.map else []
                interactions = await asyncio.gather(
                    *maps,
                    *(
                        fake.invoke(
                            u, "genre", "new", {"count": args.count, "weirdness": 1 + i % 5}
                        )
                        for i, u in enumerate(users)
                    ),
                )

                def answered() -> bool:
                    return all(fake.followups(i) for i in interactions)

                await fake.wait_for(answered, within=120)
            wall_s = time.perf_counter() - start
    finally:
        await fake.stop()
        await engine.dispose()
    return {
        **sampler.summary(),
        "burst_s": round(wall_s, 2),
        "requests": len(backend.requests),
        "largest_request": max(backend.requests, default=0),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    positions = load_positions(args.positions)
    runs = [await one_run(args, positions, run) for run in range(args.runs)]
    return {
        "users": args.users,
        "count": args.count,
        "map": args.map,
        "positions": len(positions),
        "runs": runs,
        **{
            f"{key}_median": statistics.median(r[key] for r in runs)
            for key in ("worst_ms", "p99_ms", "over_50ms")
        },
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=32)
    parser.add_argument("--count", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--positions", type=Path, default=DEFAULT_POSITIONS)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--no-map", dest="map", action="store_false", help="no /genre map")
    return parser.parse_args(argv)


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.WARNING)
    arguments = parse_args()
    result = asyncio.run(main(arguments))
    text = json.dumps(result, indent=2)
    sys.stdout.write(text + "\n")
    if arguments.json is not None:
        arguments.json.write_text(text + "\n", encoding="utf-8")
