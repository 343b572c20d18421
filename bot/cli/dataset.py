"""`microgenre dataset build`: training and validation JSONL and the known-genre fingerprint.

The genres come from the store (or a genres.csv table), plus optional extra genres; `train` and
`server-run` build their dataset the same way when no --dataset folder is given. By default the
held-out protocol splits them (:mod:`model.splits`): a dev tenth of the Every Noise names is the
validation split and a lockbox tenth is set aside, both removed from every source.
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
from model.dataset import BLEND_FRACTION, LIKE_FRACTION, WORD_LIKE_SHARE
from model.splits import LOCKBOX_SEED

SPLITS = ("everynoise", "random")

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
    split: str = "everynoise",
    lockbox_seed: int = LOCKBOX_SEED,
    blend_fraction: float = BLEND_FRACTION,
    word_like_share: float = WORD_LIKE_SHARE,
) -> dict[str, Any]:
    """Build a dataset from a genres.csv table or the store into ``output``; its statistics.

    ``split`` "everynoise" is the held-out protocol (dev seed ``seed``, lockbox seed
    ``lockbox_seed``; ``valid_fraction`` only applies when no genre comes from Every Noise),
    "random" a random ``valid_fraction`` of all genres and no lockbox."""
    from model.dataset import build_dataset, write_dataset
    from model.errors import DatasetError
    from model.splits import HoldoutSpec

    try:
        holdout = HoldoutSpec(seed, lockbox_seed) if split == "everynoise" else None
    except DatasetError as exc:
        raise InputError(str(exc)) from None

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
        holdout=holdout,
        blend_fraction=blend_fraction,
        word_like_share=word_like_share,
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
    held = stats.get("held_out")
    if held:
        click.echo(
            f"held out of every source (Every Noise names by loose key, dev seed "
            f"{held['dev_seed']}, lockbox seed {held['lockbox_seed']}): dev {held['dev']} "
            f"(the validation split), lockbox {held['lockbox']} (read only by `microgenre eval "
            f"--lockbox`); {held['records_removed']} records removed, "
            f"{held['parents_reattached']} parent links re-attached"
        )
    else:
        click.echo("split: random (no lockbox)")
    click.echo(
        f"blend examples (like: a | b): {stats['like_examples'].get('blend', 0)} "
        f"from {stats.get('blend_eligible', 0)} training genres with two or more parents"
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
@click.option(
    "--split",
    type=click.Choice(SPLITS),
    default="everynoise",
    show_default=True,
    help="everynoise: the held-out protocol (a dev tenth of the Every Noise names as the "
    "validation split, a lockbox tenth set aside, both removed from every source); random: a "
    "random --valid-fraction of all genres, no lockbox.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Dev split and sampling seed.")
@click.option(
    "--lockbox-seed",
    type=int,
    default=LOCKBOX_SEED,
    show_default=True,
    help="The lockbox's seed: keep the default, or every lockbox number so far is void.",
)
@click.option(
    "--valid-fraction",
    type=float,
    default=0.08,
    show_default=True,
    help="Validation share of --split random (and of a store without Every Noise genres).",
)
@click.option(
    "--like-fraction",
    type=click.FloatRange(0, 1),
    default=LIKE_FRACTION,
    show_default=True,
    help="Share of training examples conditioned on a like: (a related genre or a word).",
)
@click.option(
    "--blend-fraction",
    type=click.FloatRange(0, 1),
    default=BLEND_FRACTION,
    show_default=True,
    help="Share of the like: examples of genres with two or more parents that are blends "
    "of two of them (like: a | b).",
)
@click.option(
    "--word-like-share",
    type=click.FloatRange(0, 1),
    default=WORD_LIKE_SHARE,
    show_default=True,
    help="Chance that a like: example of a genre with a related genre uses one of the genre's "
    "own words instead (which teaches like: to repeat its condition); 0: no such examples at all.",
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
    split: str,
    seed: int,
    lockbox_seed: int,
    valid_fraction: float,
    like_fraction: float,
    blend_fraction: float,
    word_like_share: float,
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
        split=split,
        lockbox_seed=lockbox_seed,
        blend_fraction=blend_fraction,
        word_like_share=word_like_share,
    )
    if as_json:
        click.echo(json.dumps(stats, indent=2, ensure_ascii=False))
    else:
        _print_dataset_stats(stats, folder)
