"""`microgenre train`: fine-tune a LoRA adapter (with --votes, a server run).

torch is imported only inside the command.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from bot.cli.common import adapter_path, quiet_transformers, state
from bot.cli.dataset import build_dataset_folder, genre_source_options
from bot.config import Config
from bot.errors import InputError, MicrogenreError
from model.errors import ModelError
from model.events import EventKind, StopReason, TrainEvent

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


def _server_run_options(fn: F) -> F:
    """The options of a server run (`train --votes`)."""
    fn = click.option(
        "--objective",
        type=click.Choice(["kto", "unlikelihood"]),
        default=None,
        help="How votes teach (server run; default kto).",
    )(fn)
    fn = click.option(
        "--max-minutes",
        type=click.FloatRange(0, 600, min_open=True),
        default=None,
        help="Wall-clock cap of a server run, loading included (default 4.5).",
    )(fn)
    fn = click.option(
        "--replay",
        type=click.IntRange(0),
        default=None,
        help="Real genres replayed in a server run so it does not forget (default 2000).",
    )(fn)
    fn = click.option(
        "--from-adapter",
        type=click.Path(file_okay=False),
        default=None,
        help="The adapter a server run starts from (default: the configured one).",
    )(fn)
    return click.option(
        "--votes",
        type=click.Path(dir_okay=False),
        default=None,
        help='Server run: JSONL of {"name", "label": "up"|"down", "like"} votes.',
    )(fn)


def _error_event(message: str, reason: StopReason) -> TrainEvent:
    return TrainEvent(EventKind.ERROR, message=message, stop_reason=reason)


@click.command()
@click.option(
    "--output",
    type=click.Path(file_okay=False),
    default=None,
    help="Adapter folder (default: <data_dir>/adapters/lora-<time>).",
)
@click.option(
    "--dataset",
    "dataset_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="A folder from `dataset build`; default: build one from the store now.",
)
@genre_source_options
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
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--no-resume", is_flag=True, help="Ignore a checkpoint left by an interrupted run.")
@click.option("--progress-json", is_flag=True, help="JSON lines on stdout instead of a bar.")
@_server_run_options
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
    seed: int,
    no_resume: bool,
    progress_json: bool,
    votes: str | None,
    from_adapter: str | None,
    replay: int | None,
    max_minutes: float | None,
    objective: str | None,
) -> None:
    """Fine-tune a LoRA adapter on the store's genres (Ctrl-C saves a checkpoint to resume).

    With --votes FILE, a server run instead: a short fine-tune of --from-adapter (default: the
    configured adapter) on a server's 👍/👎 votes plus a replay of real genres.
    """
    config = state(ctx).config
    server = _server_run_settings(config, votes, from_adapter, replay, max_minutes, objective)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out = Path(output) if output else config.data_dir / "adapters" / f"lora-{stamp}"
    emit: Callable[[TrainEvent], None] = _json_progress if progress_json else _BarProgress()
    try:
        _train(
            config,
            out,
            emit,
            dataset_dir=dataset_dir,
            from_csv=from_csv,
            extra_genres=extra_genres,
            min_score=include_generated_min_score,
            overrides={
                "epochs": epochs,
                "batch_size": batch_size,
                "learning_rate": learning_rate,
                "lora_r": lora_r,
                "lora_alpha": lora_alpha,
                "lora_dropout": lora_dropout,
                "max_steps": max_steps,
                "select_by": select_by,
                "patience": patience,
                "target_modules": tuple(m.strip() for m in target_modules.split(",") if m.strip())
                if target_modules
                else None,
            },
            seed=seed,
            resume=not no_resume,
            server=server,
        )
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


def _train(
    config: Config,
    out: Path,
    emit: Callable[[TrainEvent], None],
    *,
    dataset_dir: str | None,
    from_csv: str | None,
    extra_genres: str | None,
    min_score: int | None,
    overrides: dict[str, Any],
    seed: int,
    resume: bool,
    server: dict[str, Any] | None = None,
) -> None:
    quiet_transformers()
    from model.train import TrainConfig
    from model.train import train as run_training

    if dataset_dir:
        folder = Path(dataset_dir)
        if not (folder / "train.jsonl").is_file():
            raise InputError(f"{folder} is not a dataset folder (no train.jsonl).")
    else:
        folder = config.data_dir / "datasets" / out.name
        build_dataset_folder(
            config,
            folder,
            from_csv=from_csv,
            extra_file=extra_genres,
            min_score=min_score,
            seed=seed,
            valid_fraction=0.08,
        )
    values = {k: v for k, v in overrides.items() if v is not None}
    if server is not None:
        _server_run(config, folder, out, emit, server, seed=seed, max_steps=values.get("max_steps"))
        return
    cfg = TrainConfig(
        base_model=config.model.base_model,
        device=config.model.device,
        dtype=config.model.dtype,
        threads=config.model.threads,
        seed=seed,
        **values,
    )
    run_training(
        folder, out, cfg, progress=emit, data_dir=config.data_dir, resume=resume, name=out.name
    )


def _server_run_settings(
    config: Config,
    votes: str | None,
    from_adapter: str | None,
    replay: int | None,
    max_minutes: float | None,
    objective: str | None,
) -> dict[str, Any] | None:
    """The server-run settings; None for a full training. The votes are read now, so a bad
    file is one line before any model is loaded."""
    if votes is None:
        if from_adapter or replay is not None or max_minutes is not None or objective:
            raise InputError(
                "--from-adapter, --replay, --max-minutes and --objective need --votes."
            )
        return None
    from model.dataset import read_votes

    read_votes(votes)
    options = {"replay": replay, "max_minutes": max_minutes, "objective": objective}
    return {
        "votes": votes,
        "from_adapter": adapter_path(config, from_adapter),
        **{k: v for k, v in options.items() if v is not None},
    }


def _server_run(
    config: Config,
    dataset: Path,
    out: Path,
    emit: Callable[[TrainEvent], None],
    server: dict[str, Any],
    *,
    seed: int,
    max_steps: int | None,
) -> None:
    from model.train import ServerRunConfig, server_run

    settings: dict[str, Any] = {
        k: v for k, v in server.items() if k not in ("votes", "from_adapter")
    }
    if max_steps:
        settings["max_steps"] = max_steps
    cfg = ServerRunConfig(
        base_model=config.model.base_model,
        device=config.model.device,
        dtype=config.model.dtype,
        threads=config.model.threads,
        seed=seed,
        **settings,
    )
    server_run(
        dataset,
        server["votes"],
        server["from_adapter"],
        out,
        cfg,
        progress=emit,
        data_dir=config.data_dir,
        name=out.name,
    )
