"""`microgenre generate`: genres from the pipeline to stdout and the store.

Each genre is printed as soon as the pipeline accepts it (one per line, or one JSON object per
line), so stdout stays a clean list; a progress bar goes to stderr when it is a terminal and
the count is large (or when asked). With a store, the genres already generated are excluded
and the new ones are recorded every :data:`RECORD_EVERY` genres and once more at the end
(also when the call gives up, fails or is interrupted), so a Ctrl-C loses at most that many.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from bot.cli.common import (
    adapter_path,
    load_fingerprint,
    load_sampler,
    open_store,
    state,
    store_configured,
)
from bot.config import Config
from bot.store.engine import SessionMaker
from model.errors import GenerationError
from model.pipeline import GenerationOutcome, GenrePipeline, GenreStream
from model.protocol import CompletionBackend

# Genres recorded in the store per transaction while a large call streams.
RECORD_EVERY = 100
# From this many genres on, a progress bar is shown when stderr is a terminal.
PROGRESS_FROM = 50


@dataclass(frozen=True)
class GenerateOptions:
    """What `microgenre generate` was asked for."""

    count: int
    seed: int | None = None
    like: str | None = None
    temperature: float | None = None
    # 1..5: the plausibility band (1 = most plausible novel); None: unranked, sampling order.
    weirdness: int | None = None
    record: bool = True
    as_json: bool = False
    # None: a bar when ``count >= PROGRESS_FROM`` and stderr is a terminal.
    progress: bool | None = None

    def wants_bar(self, stderr_is_tty: bool) -> bool:
        """Whether to draw the progress bar.

        >>> GenerateOptions(1000).wants_bar(True), GenerateOptions(10).wants_bar(True)
        (True, False)
        >>> GenerateOptions(1000).wants_bar(False)
        False
        >>> GenerateOptions(9, progress=True).wants_bar(False)
        True
        """
        if self.progress is not None:
            return self.progress
        return stderr_is_tty and self.count >= PROGRESS_FROM

    def record_options(self) -> dict[str, Any]:
        """The options stored with each recorded generation."""
        return {
            "like": self.like,
            "temperature": self.temperature,
            "weirdness": self.weirdness,
            "seed": self.seed,
            "cli": True,
        }


def _local_backend(config: Config, adapter: Path) -> Any:
    """The in-process model behind `generate` (tests replace this module's :func:`load_sampler`)."""
    from model.sampler import LocalBackend

    return LocalBackend(load_sampler(config, adapter))


@click.command()
@click.option("-n", "--count", type=click.IntRange(1, 100_000), default=10, show_default=True)
@click.option("--seed", type=int, default=None, help="Seed for reproducible sampling.")
@click.option("--like", default=None, help="Steer towards a genre or a word.")
@click.option("--temperature", type=click.FloatRange(0.1, 2.0), default=None)
@click.option(
    "--weirdness",
    type=click.IntRange(1, 5),
    default=None,
    help="1 = the most plausible novel genres … 5 = the least plausible that still pass the "
    "filters (samples 3x more to choose from); default: unranked.",
)
@click.option(
    "--adapter", default=None, help="LoRA adapter folder (default: config, else shipped)."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--no-record", is_flag=True, help="Do not store the genres (store only).")
@click.option("--stats", "show_stats", is_flag=True, help="Print rejection statistics to stderr.")
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bar on stderr (default: for 50 genres or more when stderr is a terminal).",
)
@click.pass_context
def generate(
    ctx: click.Context,
    count: int,
    seed: int | None,
    like: str | None,
    temperature: float | None,
    weirdness: int | None,
    adapter: str | None,
    as_json: bool,
    no_record: bool,
    show_stats: bool,
    progress: bool | None,
) -> None:
    """Print COUNT distinct genres that do not exist yet, one per line, as they come.

    Gives up (exit status 1, after printing and recording what it has) only when the model's
    acceptance rate collapses.
    """
    config = state(ctx).config
    path = adapter_path(config, adapter)
    started = time.perf_counter()
    backend = _local_backend(config, path)
    options = GenerateOptions(
        count=count,
        seed=seed,
        like=like,
        temperature=temperature,
        weirdness=weirdness,
        record=not no_record,
        as_json=as_json,
        progress=progress,
    )
    job = run_generate(
        config, backend, load_fingerprint(path), options, use_store=store_configured(config)
    )
    try:
        outcome = asyncio.run(job)
    except GenerationError as exc:
        if show_stats and exc.partial is not None:
            _print_generate_stats(exc.partial.stats, started)
        raise
    if show_stats:
        _print_generate_stats(outcome.stats, started)


def _print_generate_stats(stats: dict[str, int], started: float) -> None:
    data = {**stats, "seconds": round(time.perf_counter() - started, 2)}
    click.echo(json.dumps(data, sort_keys=True), err=True)


async def run_generate(
    config: Config,
    backend: CompletionBackend,
    fingerprint: Any,
    options: GenerateOptions,
    *,
    use_store: bool,
) -> GenerationOutcome:
    """Stream ``options.count`` genres out; raises the pipeline's error after printing all."""
    from model.filters import Moderator

    if not use_store:
        pipeline = GenrePipeline(
            backend, fingerprint, Moderator(), avoid_known=config.model.avoid_known
        )
        return await _print_stream(_stream(pipeline, options, ()), options, None)
    from bot.store.generated import generated_names, training_names

    async with open_store(config) as sessions:
        known = await training_names(sessions)
        previous = await generated_names(sessions)
        pipeline = GenrePipeline(
            backend, fingerprint, Moderator(), known=known, avoid_known=config.model.avoid_known
        )
        recorder = _Recorder(sessions, options) if options.record else None
        return await _print_stream(_stream(pipeline, options, previous), options, recorder)


def _stream(
    pipeline: GenrePipeline, options: GenerateOptions, exclude: Iterable[str]
) -> GenreStream:
    return pipeline.stream(
        options.count,
        like=options.like,
        temperature=options.temperature,
        seed=options.seed,
        exclude=list(exclude),
        weirdness=options.weirdness,
    )


async def _print_stream(
    stream: GenreStream, options: GenerateOptions, recorder: _Recorder | None
) -> GenerationOutcome:
    printer = _Printer(options)
    try:
        async for genre in stream:
            printer.emit(genre, stream.model)
            if recorder is not None:
                await recorder.add(genre, stream.model)
    finally:
        printer.close()
        if recorder is not None:
            await recorder.flush()
    return stream.outcome


class _Printer:
    """One line per genre on stdout; a tqdm bar on stderr when wanted."""

    def __init__(self, options: GenerateOptions) -> None:
        self.as_json = options.as_json
        self.bar: Any = None
        if options.wants_bar(sys.stderr.isatty()):
            from tqdm import tqdm

            self.bar = tqdm(total=options.count, unit="genre", desc="generating", file=sys.stderr)

    def emit(self, genre: str, model: str) -> None:
        line = json.dumps({"genre": genre, "model": model}, ensure_ascii=False)
        if not self.as_json:
            line = genre
        if self.bar is None:
            click.echo(line)
            return
        self.bar.write(line, file=sys.stdout)  # clears the bar, prints, draws it again
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _Recorder:
    """Records streamed genres in the store, :data:`RECORD_EVERY` per transaction."""

    def __init__(self, sessions: SessionMaker, options: GenerateOptions) -> None:
        self.sessions = sessions
        self.options = options.record_options()
        self.pending: list[str] = []
        self.model = ""

    async def add(self, genre: str, model: str) -> None:
        self.pending.append(genre)
        self.model = model
        if len(self.pending) >= RECORD_EVERY:
            await self.flush()

    async def flush(self) -> None:
        if not self.pending:
            return
        from bot.store.generated import record_generations_bulk

        names, self.pending = self.pending, []
        await record_generations_bulk(
            self.sessions, names, model_name=self.model, options=self.options
        )
