"""`microgenre generate -n N` for large N: a scripted sampler behind the real CLI and store."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Callable
from typing import Any

import pytest

import bot.cli.generate as cli_generate
from bot.cli import entry
from bot.store.generated import generated_names
from model.protocol import GenerationRequest, GenerationResult

PREVIOUS = 3000  # generated genres already in the store


class PatternSampler:
    """Stands in for model.sampler.Sampler: candidate i is ``w<i> jazz`` when ``good(i)``, else
    a known genre; ``after`` (if given) runs before each batch with the candidates so far."""

    name = "pattern"

    def __init__(
        self, good: Callable[[int], bool], after: Callable[[int], None] | None = None
    ) -> None:
        self.good = good
        self.after = after
        self.index = 0
        self.requests: list[GenerationRequest] = []

    def complete_batch(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        results = []
        for request in requests:
            if self.after is not None:
                self.after(self.index)
            self.requests.append(request)
            texts = []
            for _ in range(request.n):
                texts.append(f" w{self.index} jazz" if self.good(self.index) else " post rock")
                self.index += 1
            results.append(
                GenerationResult(tuple(texts), self.name, finished=tuple([True] * request.n))
            )
        return results


def use_sampler(monkeypatch: pytest.MonkeyPatch, sampler: Any) -> None:
    monkeypatch.setattr(cli_generate, "load_sampler", lambda config, adapter: sampler)


@pytest.fixture
def store(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A migrated store holding PREVIOUS generated genres: w0 jazz, w2 jazz, w4 jazz, …"""
    from bot.store import schema
    from bot.store.engine import create_engine, create_sessionmaker
    from bot.store.models import ORIGIN_GENERATED, Genre

    asyncio.run(asyncio.to_thread(schema.upgrade, sqlite_url, "head"))

    async def seed() -> None:
        engine = create_engine(sqlite_url)
        async with create_sessionmaker(engine).begin() as session:
            session.add_all(
                Genre(name=f"w{i} jazz", display_name=f"w{i} jazz", origin=ORIGIN_GENERATED)
                for i in range(0, 2 * PREVIOUS, 2)
            )
        await engine.dispose()

    asyncio.run(seed())
    monkeypatch.setenv("MICROGENRE_DATABASE_URL", sqlite_url)
    return sqlite_url


def stored(url: str) -> list[str]:
    from bot.store.engine import create_engine, create_sessionmaker

    async def names() -> list[str]:
        engine = create_engine(url)
        try:
            return await generated_names(create_sessionmaker(engine))
        finally:
            await engine.dispose()

    return asyncio.run(names())


def test_generate_5000_with_a_store_that_holds_thousands(
    store: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sampler = PatternSampler(lambda i: i % 5 != 4)  # 80 % well-formed, novel-looking
    use_sampler(monkeypatch, sampler)
    before = set(stored(store))
    assert len(before) == PREVIOUS

    assert entry(["generate", "-n", "5000", "--seed", "7"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5000 == len(set(lines))
    assert not set(lines) & before  # nothing issued before is issued again
    assert max(r.n for r in sampler.requests) <= 256
    after = set(stored(store))
    assert after == before | set(lines)


def test_generate_without_a_store_and_json_lines(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    use_sampler(monkeypatch, PatternSampler(lambda i: i % 2 == 0))
    assert entry(["generate", "-n", "2000", "--json"]) == 0
    captured = capsys.readouterr()
    rows = [json.loads(line) for line in captured.out.splitlines()]
    assert len(rows) == 2000 == len({row["genre"] for row in rows})
    assert {row["model"] for row in rows} == {"pattern"}
    assert "\r" not in captured.err  # stderr is no terminal: no bar unless asked


def test_the_progress_bar_goes_to_stderr_and_stdout_stays_clean(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    use_sampler(monkeypatch, PatternSampler(lambda i: True))
    assert entry(["generate", "-n", "300", "--progress"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) == 300 and all(line.startswith("w") for line in lines)
    assert "300/300" in captured.err


def test_a_collapsed_model_prints_what_it_has_and_exits_1(
    store: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    use_sampler(monkeypatch, PatternSampler(lambda i: i % 2 == 1 and i < 500))
    before = set(stored(store))
    assert entry(["generate", "-n", "1000"]) == 1
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) == 250 == len(set(lines))
    error = captured.err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("Error: ")
    assert "only 250 of 1000 acceptable genres" in error[0] and "Traceback" not in captured.err
    assert set(stored(store)) == before | set(lines)  # what was printed is recorded


def test_an_interruption_loses_at_most_one_chunk(
    store: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bot.cli.generate import RECORD_EVERY

    def interrupt(sampled: int) -> None:
        if sampled >= 3000:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the next batch is sampled

    use_sampler(monkeypatch, PatternSampler(lambda i: i % 2 == 1, after=interrupt))
    before = set(stored(store))
    # Ctrl-C as a fresh process gets it: CI once saw this SIGINT have no effect at all (all
    # 5000 printed, exit 0), so the disposition it found is part of the failure message.
    found = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        status = entry(["generate", "-n", "5000", "--seed", "1"])
    finally:
        signal.signal(signal.SIGINT, found)
    assert status == 130, f"SIGINT disposition before the test: {found!r}"
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) >= 1000
    new = set(stored(store)) - before
    assert new <= set(lines) and len(lines) - len(new) < RECORD_EVERY


def test_seeded_generation_is_reproducible_without_a_store(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    outputs: list[list[str]] = []
    for _ in range(2):
        use_sampler(monkeypatch, SeededSampler())
        assert entry(["generate", "-n", "600", "--seed", "3"]) == 0
        outputs.append(capsys.readouterr().out.splitlines())
    assert len(outputs[0]) == 600 and outputs[0] == outputs[1]


class SeededSampler:
    """Completions that depend only on the request's seed and size."""

    name = "seeded"

    def complete_batch(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        import random

        results: list[GenerationResult] = []
        for request in requests:
            rng = random.Random(request.seed)
            texts: Any = tuple(
                f" s{rng.randrange(10**7)} jazz" if rng.random() < 0.6 else " post rock"
                for _ in range(request.n)
            )
            results.append(GenerationResult(texts, self.name, finished=tuple([True] * len(texts))))
        return results
