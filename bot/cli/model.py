"""`microgenre dataset build`, `microgenre train`, `microgenre generate`, `microgenre eval`.

The model library (``model/``) does the work; this module wires it to the configuration and the
store. torch is imported only inside the commands that sample or train.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from bot.cli.common import open_store, state
from bot.config import Config
from bot.errors import InputError, MicrogenreError
from model.artifacts import DEFAULT_ADAPTER_DIR, is_adapter, read_card, write_card
from model.dataset import LIKE_FRACTION
from model.errors import ModelError
from model.events import EvalResult, EventKind, StopReason, TrainEvent
from model.pipeline import DEFAULT_TEMPERATURE

F = TypeVar("F", bound=Callable[..., Any])


def _quiet_transformers() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import warnings

    warnings.filterwarnings("ignore", module="peft")
    warnings.filterwarnings("ignore", module="transformers")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _say(message: str) -> None:
    click.echo(message, err=True)


def adapter_path(config: Config, adapter: str | None) -> Path:
    """The adapter to use: the option, the config, else the shipped default."""
    chosen = adapter or config.model.adapter
    path = config.resolve_path(chosen) if chosen else DEFAULT_ADAPTER_DIR
    if not is_adapter(path):
        hint = "" if chosen else " (the shipped default adapter is missing: reinstall)"
        raise InputError(f"{path} is not a LoRA adapter folder{hint}.")
    return path


def store_configured(config: Config) -> bool:
    """True when a store exists: an explicit database URL, or the SQLite file is there."""
    if config.database.url:
        return True
    return (config.data_dir / "microgenre.db").is_file()


def load_sampler(config: Config, adapter: Path) -> Any:
    _quiet_transformers()
    from model.sampler import Sampler

    return Sampler.load(
        config.model.base_model,
        adapter,
        device=config.model.device,
        dtype=config.model.dtype,
        threads=config.model.threads,
        data_dir=config.data_dir,
        progress=_say,
    )


def load_fingerprint(adapter: Path) -> Any:
    """The adapter's fingerprint, else an empty one (with a warning)."""
    from model.artifacts import load_fingerprint as load
    from model.filters import Fingerprint

    fingerprint = load(adapter)
    if fingerprint is None:
        _say(f"warning: {adapter} has no readable fingerprint; novelty uses the store only")
        return Fingerprint()
    return fingerprint


# ---------------------------------------------------------------- dataset


@click.group()
def dataset() -> None:
    """Build the training dataset from the store's genres."""


def _read_extra_genres(path: str | None) -> list[str]:
    if not path:
        return []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read extra genres ({exc})") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


async def _records_and_extras(
    config: Config, from_csv: str | None, extra_file: str | None, min_score: int | None
) -> tuple[list[dict[str, Any]], list[str], str]:
    from model.dataset import records_from_genres_csv

    extras = _read_extra_genres(extra_file)
    if from_csv:
        records = await asyncio.to_thread(records_from_genres_csv, from_csv)
        source = f"csv:{Path(from_csv).name}"
        if min_score is not None and store_configured(config):
            from bot.store.generated import well_voted_generated

            async with open_store(config) as sessions:
                extras += await well_voted_generated(sessions, min_score)
        return records, extras, source
    if not store_configured(config):
        raise InputError(
            "No store found: run `microgenre db upgrade` and `microgenre scrape`, "
            "or pass --from-csv PATH."
        )
    from bot.store.genres import export_genres

    async with open_store(config) as sessions:
        records = await export_genres(sessions)
        if min_score is not None:
            from bot.store.generated import well_voted_generated

            extras += await well_voted_generated(sessions, min_score)
    if not records:
        raise InputError("The store has no genres: run `microgenre scrape` first.")
    return records, extras, "store"


def _build_dataset(
    config: Config,
    output: Path,
    *,
    from_csv: str | None,
    extra_file: str | None,
    min_score: int | None,
    seed: int,
    valid_fraction: float,
    like_fraction: float = LIKE_FRACTION,
    source_weights: dict[str, float] | None = None,
) -> dict[str, Any]:
    from model.dataset import build_dataset, write_dataset

    if from_csv and not Path(from_csv).is_file():
        raise InputError(f"{from_csv}: no such file")
    records, extras, source = asyncio.run(
        _records_and_extras(config, from_csv, extra_file, min_score)
    )
    ds = build_dataset(
        records,
        seed=seed,
        valid_fraction=valid_fraction,
        extra_genres=extras,
        like_fraction=like_fraction,
        source_weights=source_weights,
    )
    ds.stats["source"] = source
    ds.stats["extra_genres"] = len(extras)
    write_dataset(ds, output)
    return json.loads((output / "stats.json").read_text())


def _parse_source_weights(items: tuple[str, ...]) -> dict[str, float]:
    """``("rym=0.5", ...)`` -> ``{"rym": 0.5}``; a clear error for anything else."""
    weights: dict[str, float] = {}
    for item in items:
        source, sep, value = item.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = -1.0
        if not sep or not source.strip() or not 0 <= weight <= 1:
            raise InputError(f"--source-weight: SOURCE=W with W from 0 to 1, not {item!r}.")
        weights[source.strip()] = weight
    return weights


def _print_dataset_stats(stats: dict[str, Any], output: Path) -> None:
    click.echo(
        f"dataset {output}: {stats['train']} training examples "
        f"({sum(stats['like_examples'].values())} with like:), {stats['valid']} validation "
        f"genres, {stats['known_genres']} known genres in the fingerprint "
        f"(source: {stats.get('source')})"
    )
    click.echo(
        f"leading words capped at {stats['balance_cap']} ({stats['balance_dropped']} dropped)"
    )
    click.echo("  top leading words   before          after")
    after = {w: (c, s) for w, c, s in stats["leading_after"]}
    for word, count, share in stats["leading_before"][:10]:
        a_count, a_share = after.get(word, (0, 0.0))
        click.echo(f"  {word:<18} {count:>5} {share:6.2%}   {a_count:>5} {a_share:6.2%}")


def _genre_source_options(fn: F) -> F:
    """The options that choose which genres a dataset is built from (`dataset build`, `train`)."""
    fn = click.option(
        "--include-generated-min-score",
        type=int,
        default=None,
        help="Also train on generated genres whose vote score reaches N.",
    )(fn)
    fn = click.option(
        "--extra-genres",
        type=click.Path(dir_okay=False),
        default=None,
        help="File with extra training genres (e.g. well-voted generated), one per line.",
    )(fn)
    return click.option(
        "--from-csv",
        type=click.Path(dir_okay=False),
        default=None,
        help="Build the dataset from a genres.csv table instead of the store.",
    )(fn)


@dataset.command("build")
@click.option(
    "--output",
    type=click.Path(file_okay=False),
    default=None,
    help="Dataset folder (default: <data_dir>/dataset).",
)
@_genre_source_options
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--valid-fraction", type=float, default=0.08, show_default=True)
@click.option(
    "--like-fraction",
    type=click.FloatRange(0, 1),
    default=LIKE_FRACTION,
    show_default=True,
    help="Share of training examples conditioned on a like: (a related genre or a word).",
)
@click.option(
    "--source-weight",
    "source_weights",
    multiple=True,
    metavar="SOURCE=W",
    help="Keep only a share W (0-1) of the training genres that only SOURCE lists, e.g. "
    "rym=0.5 (repeatable; validation split and known genres unchanged).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as JSON.")
@click.pass_context
def dataset_build(
    ctx: click.Context,
    output: str | None,
    from_csv: str | None,
    extra_genres: str | None,
    include_generated_min_score: int | None,
    seed: int,
    valid_fraction: float,
    like_fraction: float,
    source_weights: tuple[str, ...],
    as_json: bool,
) -> None:
    """Build train/validation JSONL and the known-genre fingerprint."""
    config = state(ctx).config
    folder = Path(output) if output else config.data_dir / "dataset"
    stats = _build_dataset(
        config,
        folder,
        from_csv=from_csv,
        extra_file=extra_genres,
        min_score=include_generated_min_score,
        seed=seed,
        valid_fraction=valid_fraction,
        like_fraction=like_fraction,
        source_weights=_parse_source_weights(source_weights),
    )
    if as_json:
        click.echo(json.dumps(stats, indent=2, ensure_ascii=False))
    else:
        _print_dataset_stats(stats, folder)


# ---------------------------------------------------------------- train


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
@_genre_source_options
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
    _quiet_transformers()
    from model.train import TrainConfig
    from model.train import train as run_training

    if dataset_dir:
        folder = Path(dataset_dir)
        if not (folder / "train.jsonl").is_file():
            raise InputError(f"{folder} is not a dataset folder (no train.jsonl).")
    else:
        folder = config.data_dir / "datasets" / out.name
        _build_dataset(
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


# ---------------------------------------------------------------- generate


def _local_backend(config: Config, adapter: Path) -> Any:
    """The in-process model behind `generate` (tests replace :func:`load_sampler`)."""
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
    from bot.cli.generating import GenerateOptions, run_generate
    from model.errors import GenerationError

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


# ---------------------------------------------------------------- eval


@click.command("eval")
@click.option("-n", "--count", type=click.IntRange(10, 100_000), default=1000, show_default=True)
@click.option(
    "--adapter", default=None, help="LoRA adapter folder (default: config, else shipped)."
)
@click.option(
    "--dataset",
    "dataset_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Dataset folder with the validation split (default: <data_dir>/dataset).",
)
@click.option(
    "--from-csv",
    type=click.Path(dir_okay=False),
    default=None,
    help="Rebuild the split from a genres.csv table (same seed as training).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--temperature",
    type=click.FloatRange(0.1, 2.0),
    default=DEFAULT_TEMPERATURE,
    show_default=True,
)
@click.option(
    "--likes",
    type=click.IntRange(0, 200),
    default=20,
    show_default=True,
    help="Number of like: conditions to test (10 genres each).",
)
@click.option("--no-baseline", is_flag=True, help="Skip the markovify baselines.")
@click.option(
    "--seeds",
    default=None,
    help="Comma-separated sampling seeds of the held-out evaluation, e.g. 1,2,3 (default: --seed).",
)
@click.option(
    "--levels",
    default="1,2,3,4,5",
    show_default=True,
    help="Weirdness levels of the held-out evaluation (0: unranked, sampling order); "
    "'none' skips it.",
)
@click.option("--json-out", type=click.Path(dir_okay=False), default=None, help="Write the report.")
@click.option(
    "--plot", type=click.Path(dir_okay=False), default=None, help="PNG of the weirdness curve."
)
@click.option("--update-card", is_flag=True, help="Store the results in the adapter's card.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def eval_command(
    ctx: click.Context,
    count: int,
    adapter: str | None,
    dataset_dir: str | None,
    from_csv: str | None,
    seed: int,
    temperature: float,
    likes: int,
    no_baseline: bool,
    seeds: str | None,
    levels: str,
    json_out: str | None,
    plot: str | None,
    update_card: bool,
    as_json: bool,
) -> None:
    """Quality of N generations vs a markovify baseline on the same training split.

    Unless --no-baseline, also the held-out evaluation: per seed and weirdness level, N
    delivered genres with the validation genres counted as novel, and how many of them the
    model re-invents next to N raw novel outputs of markovify (state 1, same training split).
    """
    config = state(ctx).config
    path = adapter_path(config, adapter)
    fair_seeds = _int_list(seeds, "--seeds") if seeds else [seed]
    fair_levels = [] if no_baseline or levels == "none" else _int_list(levels, "--levels")
    if any(not 0 <= level <= 5 for level in fair_levels):
        raise InputError("--levels: weirdness levels are 1 to 5 (0: unranked).")
    options = EvalOptions(count, seed, temperature, likes, no_baseline, fair_seeds, fair_levels)
    result = asyncio.run(_evaluate(config, path, dataset_dir, from_csv, options))
    if update_card:
        write_card(path, {**read_card(path), "eval": result.to_dict()})
    if json_out:
        Path(json_out).write_text(result.to_json() + "\n", encoding="utf-8")
    if plot and result.fair:
        from model.evaluate import plot_weirdness

        plot_weirdness(result.fair, plot)
    if as_json:
        click.echo(result.to_json())
    else:
        click.echo(format_eval_table(result))


def _int_list(text: str, option: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InputError(f"{option}: a comma-separated list of integers, not {text!r}.") from None


@dataclass(frozen=True)
class EvalOptions:
    """What `microgenre eval` measures (besides the adapter and the split)."""

    count: int
    seed: int  # the split's seed and the tables' sampling seed
    temperature: float
    likes: int
    no_baseline: bool
    fair_seeds: list[int]
    fair_levels: list[int]  # empty: no held-out evaluation; 0: unranked


def _load_split(
    config: Config, dataset_dir: str | None, from_csv: str | None, seed: int
) -> tuple[list[Any], list[Any], list[str], str, list[Any]]:
    """Training and validation examples, every known genre name, where they came from and
    the records (from a genres.csv table; none from a dataset folder)."""
    from model.dataset import (
        TRAIN_FILE,
        VALID_FILE,
        build_dataset,
        read_examples,
        records_from_genres_csv,
    )

    if from_csv:
        if not Path(from_csv).is_file():
            raise InputError(f"{from_csv}: no such file")
        records = records_from_genres_csv(from_csv)
        ds = build_dataset(records, seed=seed)
        return ds.train, ds.valid, ds.known, f"csv:{from_csv}", records
    folder = Path(dataset_dir) if dataset_dir else config.data_dir / "dataset"
    if not (folder / TRAIN_FILE).is_file():
        raise InputError(
            f"No dataset at {folder}: run `microgenre dataset build` or pass --from-csv PATH."
        )
    train, valid = read_examples(folder / TRAIN_FILE), read_examples(folder / VALID_FILE)
    return train, valid, [e.genre for e in train + valid], str(folder), []


async def _evaluate(
    config: Config,
    adapter: Path,
    dataset_dir: str | None,
    from_csv: str | None,
    options: EvalOptions,
) -> EvalResult:
    import random

    from model.evaluate import (
        HeldOut,
        MarkovBackend,
        evaluate_backend,
        fair_evaluation,
        related_words,
    )
    from model.filters import LeadingPrior, Moderator
    from model.pipeline import RERANK, GenrePipeline
    from model.sampler import LocalBackend

    count, seed, temperature = options.count, options.seed, options.temperature
    likes, no_baseline = options.likes, options.no_baseline
    loaded = _load_split(config, dataset_dir, from_csv, seed)
    train_examples, valid_examples, known_names, split_source, records = loaded
    fingerprint = load_fingerprint(adapter)
    moderator = Moderator()
    rng = random.Random(seed)
    related = sorted({e.like for e in train_examples if e.like})
    like_terms = rng.sample(related, min(likes, len(related))) if likes else []
    sampler = await asyncio.to_thread(load_sampler, config, adapter)
    backend = LocalBackend(sampler)
    # Large requests: the evaluation asks for N at once (the pipeline chunks them in batches).
    # A weak model (a barely trained adapter) stops after 10 candidates per genre asked and is
    # measured on what it delivered by then. 30 requests: a strong one's last few genres can
    # take more than 10 small ones (the leading-word cap refuses most of them; 999 of 1 000).
    sizes: dict[str, Any] = {
        "max_attempts": 30,
        "max_request": max(512, 4 * count),
        "max_candidates": 10 * count,
    }
    pipeline = GenrePipeline(backend, fingerprint, moderator, **sizes)
    model_table = await evaluate_backend(
        backend,
        pipeline,
        n=count,
        fingerprint=fingerprint,
        train=train_examples,
        valid=valid_examples,
        seed=seed,
        temperature=temperature,
        likes=like_terms,
        related=related_words(train_examples, records),
    )
    baseline = None
    if not no_baseline:
        markov = MarkovBackend([e.genre for e in train_examples], seed=seed)
        markov_pipeline = GenrePipeline(markov, fingerprint, moderator, **sizes)
        baseline = await evaluate_backend(
            markov,
            markov_pipeline,
            n=count,
            fingerprint=fingerprint,
            train=train_examples,
            valid=valid_examples,
            seed=seed,
            temperature=temperature,
        )
    fair = None
    if options.fair_levels:
        held = HeldOut.build(known_names, train_examples, valid_examples)
        # The adapter's leading-word prior, as in production (else the split's own).
        prior = fingerprint.leading or LeadingPrior.from_names(e.genre for e in train_examples)

        # A weirdness level chooses from RERANK times the candidates: so many more may be
        # sampled before the call counts as weak (one short of 1 000 at 10 per genre).
        held_sizes = {**sizes, "max_candidates": int(sizes["max_candidates"] * RERANK)}

        def held_out_pipeline(over: Any) -> GenrePipeline:
            return GenrePipeline(
                over, held.fingerprint, moderator, leading_prior=prior, **held_sizes
            )

        fair = await fair_evaluation(
            backend,
            held_out_pipeline,
            held,
            [e.genre for e in train_examples],
            n=count,
            seeds=options.fair_seeds,
            levels=[level or None for level in options.fair_levels],
            temperature=temperature,
        )
    return EvalResult(
        n=count,
        adapter=str(adapter),
        split=split_source,
        train_genres=len(train_examples),
        valid_genres=len(valid_examples),
        temperature=temperature,
        model=model_table,
        baseline=baseline,
        fair=fair,
    )


def format_eval_table(result: EvalResult) -> str:
    """The side-by-side table `microgenre eval` prints."""
    model, base = result.model, result.baseline
    cols = [("model", model)] + ([("markovify", base)] if base else [])
    lines = [
        f"eval: n={result.n}, temperature {result.temperature}, "
        f"{result.valid_genres} held-out validation genres ({result.split})",
        f"{'':34}" + "".join(f"{name:>14}" for name, _ in cols),
    ]

    def row(label: str, get: Callable[[dict[str, Any]], Any], fmt: str = "{:.1%}") -> None:
        lines.append(f"{label:34}" + "".join(f"{fmt.format(get(t)):>14}" for _, t in cols))

    row("raw well-formed", lambda t: t["raw"]["well_formed"])
    row("raw unique (of well-formed)", lambda t: t["raw"]["unique"])
    row("raw novel (of well-formed)", lambda t: t["raw"]["novel"])
    row("raw exact known genre", lambda t: t["raw"]["known"])
    row("raw novel with an unseen word", lambda t: t["raw"]["novel_with_new_word"] or 0.0)
    row("validation genres re-invented", lambda t: t["raw"]["reinvented_valid"], "{}")
    row("delivered well-formed", lambda t: t["delivered"]["well_formed"])
    row("delivered unique", lambda t: t["delivered"]["unique"])
    row("delivered novel", lambda t: t["delivered"]["novel"])
    row("delivered 'musica ...' share", lambda t: t["delivered"]["musica_share"], "{:.2%}")
    row("training 'musica ...' share", lambda t: t["delivered"]["musica_train_share"], "{:.2%}")
    row("delivered genres / s", lambda t: t["delivered_per_s"], "{:.1f}")
    for name, table in cols:
        if table.get("shortfall"):
            lines.append(f"  {name} fell short: {table['shortfall']}")
    lines.append("top leading words (delivered share / training share):")
    for name, table in cols:
        words = ", ".join(
            f"{w} {s:.1%}/{ts:.1%}" for w, s, ts in table["delivered"]["top_leading"][:6]
        )
        lines.append(f"  {name}: {words}")
    if "like" in model:
        like = model["like"]
        lines.append(
            f"like: honoured {like.get('share', like['share_word']):.1%} (a word shared with "
            f"the condition {like['share_word']:.1%}, or with a real related genre) "
            f"over {like['genres']} genres from {like['likes']} conditions"
        )
        for condition, delivered, asked in like.get("short", []):
            lines.append(f"  like: {condition} gave up after {delivered} of {asked} genres")
    lines.append("samples: " + "; ".join(model["samples"][:10]))
    if result.fair:
        lines.extend(format_held_out(result.fair))
    return "\n".join(lines)


def format_held_out(fair: dict[str, Any]) -> list[str]:
    """The held-out evaluation's lines: per weirdness level, means over the seeds (min-max)."""

    def span(stats: dict[str, float], fmt: str = "{:.1f}") -> str:
        return (
            f"{fmt.format(stats['mean'])} ({fmt.format(stats['min'])}-{fmt.format(stats['max'])})"
        )

    base = fair["summary"]["baseline"]
    lines = [
        f"held-out: {fair['n']} delivered per level, seeds {fair['seeds']}, temperature "
        f"{fair['temperature']}, {fair['targets']} validation genres to re-invent",
        f"  markovify raw novel (state 1, no filters): re-invents {span(base['reinvented'])}",
    ]
    for level, row in fair["summary"]["levels"].items():
        label = "unranked" if level == "None" else f"weirdness {level}"
        lines.append(
            f"  {label}: re-invents {span(row['reinvented'])} = "
            f"{span(row['ratio'], '{:.2f}')}x markovify; invented words "
            f"{row['invented_word_rate']['mean']:.1%}; novel {row['novel']['mean']:.1%}, "
            f"unique {row['unique']['mean']:.1%}, well-formed {row['well_formed']['mean']:.1%}; "
            f"top lead ratio {row['lead_ratio']['max']:.2f} "
            f"({row['lead_ratio_split']['max']:.2f} against the split)"
        )
    return lines
