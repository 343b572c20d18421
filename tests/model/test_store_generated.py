"""Generated genres in the store, and `microgenre generate` with a store (scripted sampler)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from bot.store.generated import (
    generated_names,
    record_generations,
    training_names,
    well_voted_generated,
)
from bot.store.models import ORIGIN_TRAINING, Genre, Vote
from model.protocol import GenerationRequest, GenerationResult


async def test_record_and_list_generations(sessions: Any) -> None:
    async with sessions.begin() as session:
        session.add(Genre(name="post rock", display_name="post-rock", origin=ORIGIN_TRAINING))
    ids = await record_generations(
        sessions, ["Glacier Pop", "swamp techno"], model_name="m", options={"like": None}
    )
    assert len(ids) == 2
    assert sorted(await generated_names(sessions)) == ["glacier pop", "swamp techno"]
    assert await training_names(sessions) == ["post-rock"]
    # The same genre issued again (another guild) reuses its row.
    await record_generations(sessions, ["glacier pop"], guild_id=7)
    assert len(await generated_names(sessions)) == 2
    assert await generated_names(sessions, guild_id=7, any_scope=False) == ["glacier pop"]


async def test_well_voted_generated(sessions: Any) -> None:
    first, second = await record_generations(sessions, ["glacier pop", "swamp techno"])
    async with sessions.begin() as session:
        session.add_all(
            [
                Vote(generation_id=first, user_id=1, value=1),
                Vote(generation_id=first, user_id=2, value=1),
                Vote(generation_id=second, user_id=1, value=-1),
            ]
        )
    assert await well_voted_generated(sessions, 2) == ["glacier pop"]
    assert await well_voted_generated(sessions, -5) == ["glacier pop", "swamp techno"]


class ScriptedSampler:
    """Stands in for model.sampler.Sampler: numbered genres, never the same twice."""

    name = "scripted"

    def __init__(self) -> None:
        self.counter = itertools.count()

    def complete_batch(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        return [
            GenerationResult(
                texts=tuple(f" p{next(self.counter)} pop" for _ in range(r.n)),
                model=self.name,
                finished=tuple([True] * r.n),
            )
            for r in requests
        ]


def test_generate_records_and_avoids_previous_genres(
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import asyncio

    import bot.cli.generate as cli_generate
    from bot.cli import entry
    from bot.store import schema
    from bot.store.engine import create_engine, create_sessionmaker

    asyncio.run(asyncio.to_thread(schema.upgrade, sqlite_url, "head"))
    monkeypatch.setenv("MICROGENRE_DATABASE_URL", sqlite_url)
    sampler = ScriptedSampler()
    monkeypatch.setattr(cli_generate, "load_sampler", lambda config, adapter: sampler)

    assert entry(["generate", "-n", "3", "--seed", "1", "--json"]) == 0
    first = [json.loads(line)["genre"] for line in capsys.readouterr().out.splitlines()]
    assert len(first) == 3
    sampler.counter = itertools.count()  # the sampler repeats itself...
    assert entry(["generate", "-n", "3"]) == 0
    second = capsys.readouterr().out.splitlines()
    assert len(second) == 3 and not set(first) & set(second)  # ...but nothing is issued twice
    assert entry(["generate", "-n", "2", "--no-record"]) == 0
    capsys.readouterr()

    async def count() -> int:
        engine = create_engine(sqlite_url)
        try:
            return len(await generated_names(create_sessionmaker(engine)))
        finally:
            await engine.dispose()

    assert asyncio.run(count()) == 6


def test_generate_without_a_store_uses_the_fingerprint_only(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import bot.cli.generate as cli_generate
    from bot.cli import entry

    monkeypatch.setattr(cli_generate, "load_sampler", lambda config, adapter: ScriptedSampler())
    assert entry(["generate", "-n", "4"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 4
    assert not (tmp_path / "data" / "microgenre.db").exists()
