"""`microgenre train` and `microgenre server-run`: fine-tune a LoRA adapter.

`train` fine-tunes an adapter on the store's genres (or a dataset folder); `server-run` is the
short fine-tune the bot's retraining starts: an existing adapter taught by one server's 👍/👎
votes plus a replay of real genres. Both report progress as a bar on stderr or, with
--progress-json, as :class:`~model.events.TrainEvent` JSON lines on stdout (what the bot reads).
torch is imported only inside the commands.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from bot.cli.common import (
    adapter_path,
    load_sampler,
    open_store,
    quiet_transformers,
    state,
    store_configured,
)
from bot.cli.dataset import build_dataset_folder, genre_source_options
from bot.config import Config
from bot.errors import InputError, MicrogenreError
from model.errors import ModelError
from model.events import EventKind, StopReason, TrainEvent

Emit = Callable[[TrainEvent], None]
F = TypeVar("F", bound=Callable[..., Any])


class _BarProgress:
    """Human progress: a tqdm bar with loss and ETA on stderr, one line per epoch."""

    def __init__(self) -> None:
        self.bar: Any = None

    def __call__(self, event: TrainEvent) -> None:
        from tqdm import tqdm

        if event.event == EventKind.START:
            self.bar = tqdm(
                total=event.total_steps, initial=event.step or 0, desc="training", unit="step"
            )
            click.echo(
                f"training on {event.train_examples} examples, {event.trainable_params:,} "
                f"LoRA parameters, {event.device}/{event.dtype}"
                + (" (resumed)" if event.resumed else ""),
                err=True,
            )
        elif self.bar is None:
            return
        elif event.event == EventKind.STEP:
            self.bar.update((event.step or 0) - self.bar.n)
            self.bar.set_postfix(loss=f"{event.loss:.3f}", epoch=event.epoch)
        elif event.event == EventKind.EPOCH:
            self.bar.write(
                f"epoch {event.epoch}: train loss {event.loss:.4f}, "
                f"validation loss {event.valid_loss:.4f}"
                + (
                    f", {event.reinvented} validation genres re-invented"
                    if event.reinvented is not None
                    else ""
                )
            )
        elif event.event == EventKind.DONE:
            self.bar.close()


def _json_progress(event: TrainEvent) -> None:
    sys.stdout.write(event.to_json() + "\n")
    sys.stdout.flush()


def _error_event(message: str, reason: StopReason) -> TrainEvent:
    return TrainEvent(EventKind.ERROR, message=message, stop_reason=reason)


def _output_folder(config: Config, output: str | None) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return Path(output) if output else config.data_dir / "adapters" / f"lora-{stamp}"


def _report(out: Path, progress_json: bool, run: Callable[[Emit], None]) -> None:
    """``run(emit)`` with the progress the user asked for; a failure or Ctrl-C is also an
    ``error`` event when the progress is JSON (the bot reads it), then raised as usual."""
    emit: Emit = _json_progress if progress_json else _BarProgress()
    try:
        run(emit)
    except KeyboardInterrupt:
        if progress_json:
            _json_progress(_error_event("interrupted; run again to resume", StopReason.CANCELLED))
        raise
    except (MicrogenreError, ModelError) as exc:
        if progress_json:
            _json_progress(_error_event(str(exc), StopReason.FAILED))
        raise
    if not progress_json:
        click.echo(f"adapter written to {out}")


@dataclasses.dataclass(frozen=True)
class GenreSources:
    """Where a run's genres come from: the options ``_common_options`` adds."""

    dataset_dir: str | None
    from_csv: str | None
    extra_genres: str | None
    min_score: int | None

    @property
    def given(self) -> bool:
        """A dataset folder or a genres table was named (else: the store)."""
        return bool(self.dataset_dir or self.from_csv)


def _dataset_folder(config: Config, out: Path, sources: GenreSources, seed: int) -> Path:
    """The given dataset folder, else one built now under ``<data_dir>/datasets/``."""
    if sources.dataset_dir:
        folder = Path(sources.dataset_dir)
        if not (folder / "train.jsonl").is_file():
            raise InputError(f"{folder} is not a dataset folder (no train.jsonl).")
        return folder
    folder = config.data_dir / "datasets" / out.name
    build_dataset_folder(
        config,
        folder,
        from_csv=sources.from_csv,
        extra_file=sources.extra_genres,
        min_score=sources.min_score,
        seed=seed,
        valid_fraction=0.08,
    )
    return folder


def _store_has_genres(config: Config) -> bool:
    """Whether the store holds real genres to build a server run's dataset from."""
    if not store_configured(config):
        return False
    from bot.store.generations import real_genre_names

    async def count() -> int:
        async with open_store(config) as sessions:
            return len(await real_genre_names(sessions))

    return asyncio.run(count()) > 0


def _self_replay_folder(
    config: Config, out: Path, start: Path, seed: int, count: int | None = None
) -> Path:
    """A dataset of genres the starting adapter writes itself (see model.train.replay), under
    ``<data_dir>/datasets/``: for a deployment that never imported real genres. ``count``: how
    many (default and at most SELF_REPLAY_GENRES: the run replays no more than its ``--replay``)."""
    from model.artifacts import load_fingerprint
    from model.filters import Fingerprint
    from model.sampler import LocalBackend
    from model.train.replay import SELF_REPLAY_GENRES, sample_own_genres, write_self_replay_dataset

    # --replay 0 still needs genres for the evaluation split: the default number then.
    count = min(count or SELF_REPLAY_GENRES, SELF_REPLAY_GENRES)
    click.echo(
        f"The store has no real genres: replaying {count} genres of the starting adapter instead.",
        err=True,
    )
    sampler = load_sampler(config, start)
    fingerprint = load_fingerprint(start) or Fingerprint()
    names = asyncio.run(sample_own_genres(LocalBackend(sampler), fingerprint, count, seed=seed))
    del sampler  # the server run loads its own copy of the model
    folder = config.data_dir / "datasets" / out.name
    write_self_replay_dataset(names, folder, start, seed=seed)
    return folder


def _common_options(fn: F) -> F:
    """--output, --dataset and the genre sources, shared by `train` and `server-run`."""
    fn = genre_source_options(fn)
    fn = click.option(
        "--dataset",
        "dataset_dir",
        type=click.Path(file_okay=False),
        default=None,
        help="A folder from `dataset build`; default: build one from the store now.",
    )(fn)
    return click.option(
        "--output",
        type=click.Path(file_okay=False),
        default=None,
        help="Adapter folder (default: <data_dir>/adapters/lora-<time>).",
    )(fn)


# ---------------------------------------------------------------- train


@click.command()
@_common_options
@click.option("--epochs", type=click.IntRange(1, 100), default=None)
@click.option("--batch-size", type=click.IntRange(1, 4096), default=None)
@click.option("--lr", "learning_rate", type=float, default=None)
@click.option("--lora-r", type=click.IntRange(1, 512), default=None)
@click.option("--lora-alpha", type=click.IntRange(1, 4096), default=None)
@click.option("--lora-dropout", type=click.FloatRange(0, 0.9), default=None)
@click.option("--target-modules", default=None, help="Comma-separated module names.")
@click.option("--max-steps", type=click.IntRange(0), default=None, help="Stop after N steps.")
@click.option(
    "--select-by",
    type=click.Choice(["loss", "reinvention"]),
    default=None,
    help="Keep the epoch with the lowest validation loss (default) or the most validation "
    "genres re-invented.",
)
@click.option(
    "--patience",
    type=click.IntRange(1, 100),
    default=None,
    help="Epochs without improvement before stopping early (default 1).",
)
@click.option(
    "--copy-floor",
    type=click.FloatRange(0),
    default=None,
    help="Hold back memorisation: a plain genre the model gives a log-likelihood above "
    "-FLOOR nats is pushed down to it (default 0: off; docs/model.md).",
)
@click.option(
    "--copy-weight",
    type=click.FloatRange(0),
    default=None,
    help="Weight of the --copy-floor term in the loss (default 0.5).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--no-resume", is_flag=True, help="Ignore a checkpoint left by an interrupted run.")
@click.option("--progress-json", is_flag=True, help="JSON lines on stdout instead of a bar.")
@click.pass_context
def train(
    ctx: click.Context,
    output: str | None,
    dataset_dir: str | None,
    from_csv: str | None,
    extra_genres: str | None,
    include_generated_min_score: int | None,
    epochs: int | None,
    batch_size: int | None,
    learning_rate: float | None,
    lora_r: int | None,
    lora_alpha: int | None,
    lora_dropout: float | None,
    target_modules: str | None,
    max_steps: int | None,
    select_by: str | None,
    patience: int | None,
    copy_floor: float | None,
    copy_weight: float | None,
    seed: int,
    no_resume: bool,
    progress_json: bool,
) -> None:
    """Fine-tune a LoRA adapter on the store's genres (Ctrl-C saves a checkpoint to resume)."""
    config = state(ctx).config
    out = _output_folder(config, output)
    sources = GenreSources(dataset_dir, from_csv, extra_genres, include_generated_min_score)
    overrides: dict[str, Any] = {
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "lora_r": lora_r,
        "lora_alpha": lora_alpha,
        "lora_dropout": lora_dropout,
        "max_steps": max_steps,
        "select_by": select_by,
        "patience": patience,
        "copy_floor": copy_floor,
        "copy_weight": copy_weight,
        "target_modules": tuple(m.strip() for m in target_modules.split(",") if m.strip())
        if target_modules
        else None,
    }

    def run(emit: Emit) -> None:
        quiet_transformers()
        from model.train import TrainConfig
        from model.train import train as run_training

        folder = _dataset_folder(config, out, sources, seed)
        cfg = TrainConfig(
            **dataclasses.asdict(config.model.spec()),
            seed=seed,
            **{k: v for k, v in overrides.items() if v is not None},
        )
        run_training(
            folder,
            out,
            cfg,
            progress=emit,
            data_dir=config.data_dir,
            resume=not no_resume,
            name=out.name,
        )

    _report(out, progress_json, run)


# ---------------------------------------------------------------- server-run


@click.command("server-run")
@click.option(
    "--votes",
    type=click.Path(dir_okay=False),
    required=True,
    help='JSONL of {"name", "label": "up"|"down", "like"} votes.',
)
@click.option(
    "--from-adapter",
    type=click.Path(file_okay=False),
    default=None,
    help="The adapter the run starts from (default: the configured one, else the shipped one).",
)
@_common_options
@click.option(
    "--replay",
    type=click.IntRange(0),
    default=None,
    help="Real genres replayed so the model does not forget (default 2000).",
)
@click.option(
    "--max-minutes",
    type=click.FloatRange(0, 600, min_open=True),
    default=None,
    help="Wall-clock cap of the run, loading included (default 4.5).",
)
@click.option(
    "--max-steps",
    type=click.IntRange(0),
    default=None,
    help="Stop after N steps (default 60; 0: the default).",
)
@click.option(
    "--objective",
    type=click.Choice(["kto", "unlikelihood"]),
    default=None,
    help="How votes teach (default kto).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--progress-json", is_flag=True, help="JSON lines on stdout instead of a bar.")
@click.pass_context
def server_run(
    ctx: click.Context,
    votes: str,
    from_adapter: str | None,
    output: str | None,
    dataset_dir: str | None,
    from_csv: str | None,
    extra_genres: str | None,
    include_generated_min_score: int | None,
    replay: int | None,
    max_minutes: float | None,
    max_steps: int | None,
    objective: str | None,
    seed: int,
    progress_json: bool,
) -> None:
    """Fine-tune an adapter briefly on a server's 👍/👎 votes, with a replay of real genres.

    The bot's retraining runs this and reads its --progress-json events."""
    from model.dataset import read_votes

    config = state(ctx).config
    read_votes(votes)  # read now: a bad file is one line before any model is loaded
    start = adapter_path(config, from_adapter)
    out = _output_folder(config, output)
    sources = GenreSources(dataset_dir, from_csv, extra_genres, include_generated_min_score)
    options: dict[str, Any] = {
        "replay": replay,
        "max_minutes": max_minutes,
        "objective": objective,
        "max_steps": max_steps or None,
    }

    def run(emit: Emit) -> None:
        quiet_transformers()
        from model.train import ServerRunConfig
        from model.train import server_run as run_server

        if sources.given or _store_has_genres(config):
            folder = _dataset_folder(config, out, sources, seed)
        else:
            folder = _self_replay_folder(config, out, start, seed, replay)
        cfg = ServerRunConfig(
            **dataclasses.asdict(config.model.spec()),
            seed=seed,
            **{k: v for k, v in options.items() if v is not None},
        )
        run_server(
            folder, votes, start, out, cfg, progress=emit, data_dir=config.data_dir, name=out.name
        )

    _report(out, progress_json, run)
