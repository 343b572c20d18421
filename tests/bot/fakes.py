"""Test doubles for the bot: a scripted generator (``enqueue([...])``) and a running-bot harness."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.config import BotConfig, Config, DiscordConfig, PathsConfig
from bot.queue import FairQueue, QueueSettings
from bot.service import GenreService
from model.pipeline import GenerationOutcome
from model.protocol import AdapterRef, GenerateOptions, PositionCallback
from scraping.normalize import genre_key


class ScriptedGenerator:
    """A :class:`bot.service.Generator` that hands out enqueued names in order.

    Names in ``exclude`` are skipped (as the real pipeline does); ``positions`` are reported to
    ``on_position`` before answering; ``error`` is raised instead of answering when set.
    """

    def __init__(self, model_name: str = "scripted-v1") -> None:
        self.model_name = model_name
        self.names: deque[str] = deque()
        self.calls: list[dict[str, Any]] = []
        self.positions: list[int] = []
        self.delay_s = 0.0
        self.error: Exception | None = None
        self.reload_error: Exception | None = None
        self.prepared: list[str] = []
        self.waiting = 0
        self.closed = False
        self.gate: asyncio.Event | None = None
        # A model.filters.Fingerprint of real genres, as the PipelineGenerator has (or None).
        self.fingerprint: Any = None

    def enqueue(self, names: list[str]) -> None:
        self.names.extend(names)

    async def generate(
        self, count: int, options: GenerateOptions, *, on_position: PositionCallback | None = None
    ) -> GenerationOutcome:
        exclude = options.exclude
        self.calls.append(
            {
                "count": count,
                "like": options.like,
                "temperature": options.temperature,
                "weirdness": options.weirdness,
                "exclude": set(exclude),
                "adapter": options.adapter,
            }
        )
        self.waiting += 1
        try:
            for position in self.positions:
                if on_position is not None:
                    result = on_position(position)
                    if asyncio.iscoroutine(result):
                        await result
                await asyncio.sleep(0)
            if self.gate is not None:
                await self.gate.wait()
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if self.error is not None:
                raise self.error
            excluded = {genre_key(n) for n in exclude}
            out: list[str] = []
            skipped = 0
            while self.names and len(out) < count:
                name = self.names.popleft()
                if genre_key(name) in excluded:
                    skipped += 1
                    continue
                out.append(name)
            return GenerationOutcome(out, self.model_name, {"raw": len(out) + skipped})
        finally:
            self.waiting -= 1

    def health(self) -> dict[str, Any]:
        return {"state": "ready", "restarts": 0, "queue_length": self.waiting}

    @property
    def queue_length(self) -> int:
        return self.waiting

    async def prepare(self, adapter: AdapterRef) -> None:
        """Like the worker: refuse (``reload_error``), else note the adapter as loaded."""
        if self.reload_error is not None:
            raise self.reload_error
        self.prepared.append(adapter.path)

    async def close(self) -> None:
        self.closed = True


def make_config(tmp_path: Path, **bot_options: Any) -> Config:
    bot_options.setdefault("cooldown_s", 0.0)
    bot_options.setdefault("progress_edit_interval_s", 0.0)
    # No cool-down and no vote minimum unless a test sets them.
    bot_options.setdefault("retrain_cooldown_h", 0.0)
    bot_options.setdefault("retrain_min_votes", 0)
    return Config(
        paths=PathsConfig(data_dir=str(tmp_path / "data")),
        discord=DiscordConfig(token="fake-token"),
        bot=BotConfig(**bot_options),
        base_dir=tmp_path,
    )


@dataclass
class RunningBot:
    bot: Any
    task: asyncio.Task[None]
    service: GenreService
    generator: ScriptedGenerator
    retrainer: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    async def stop(self) -> None:
        await self.bot.close()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(self.task, 10)


@contextlib.asynccontextmanager
async def running_bot(
    config: Config,
    sessions: Any,
    generator: ScriptedGenerator | None = None,
    *,
    retrainer_options: dict[str, Any] | None = None,
) -> AsyncIterator[RunningBot]:
    """Start the real bot (real discord.py) against whatever Route.BASE points at."""
    from bot.app import make_bot
    from bot.retrain import RetrainManager

    generator = generator or ScriptedGenerator()
    service = GenreService(
        generator, sessions, queue=FairQueue(QueueSettings.from_config(config.bot))
    )
    await service.start()
    retrainer = RetrainManager(config, sessions, service, **(retrainer_options or {}))
    bot = make_bot(config, sessions, service, retrainer=retrainer, guild_ready_timeout=0.05)
    task = asyncio.get_running_loop().create_task(bot.start("fake-token"))
    running = RunningBot(bot, task, service, generator, retrainer)
    try:
        await asyncio.wait_for(bot.wait_until_ready(), 15)
        yield running
    finally:
        await running.stop()
