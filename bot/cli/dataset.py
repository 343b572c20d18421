"""`microgenre dataset build`: training and validation JSONL and the known-genre fingerprint.

The genres come from the store (or a genres.csv table), plus optional extra genres; `train` and
`server-run` build their dataset the same way when no --dataset folder is given.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from bot.cli.common import open_store, state, store_configured
from bot.config import Config
from bot.errors import InputError
from model.dataset import LIKE_FRACTION

F = TypeVar("F", bound=Callable[..., Any])


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


def build_dataset_folder(
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
    """Build a dataset from a genres.csv table or the store into ``output``; its statistics."""
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


def genre_source_options(fn: F) -> F:
    """The options that choose which genres a dataset is built from (`dataset build`, `train`,
    `server-run`)."""
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
@genre_source_options
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
    stats = build_dataset_folder(
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
