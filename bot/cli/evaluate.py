"""`microgenre eval`: the quality of an adapter's genres next to a markovify baseline.

The measuring is :mod:`model.evaluate`'s and :mod:`model.quality`'s; this module loads the
adapter and the split (the dev split, or with ``--lockbox`` the lockbox, whose every read is
first logged in the adapter's model card), runs it and prints the table (or writes the report,
the weirdness plot and the adapter's card).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from bot.cli.common import adapter_path, load_fingerprint, load_sampler, state
from bot.config import Config
from bot.errors import InputError
from model.artifacts import log_lockbox_read, read_card, write_card
from model.events import EvalResult
from model.pipeline import DEFAULT_TEMPERATURE


@click.command("eval")
@click.option(
    "-n",
    "--count",
    type=click.IntRange(10, 100_000),
    default=1000,
    show_default=True,
    help="Genres delivered per seed and weirdness level (and samples of the tables).",
)
@click.option(
    "--adapter", default=None, help="LoRA adapter folder (default: config, else shipped)."
)
@click.option(
    "--dataset",
    "dataset_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Dataset folder with the dev (validation) and lockbox splits "
    "(default: <data_dir>/dataset).",
)
@click.option(
    "--from-csv",
    type=click.Path(dir_okay=False),
    default=None,
    help="Rebuild the split from a genres.csv table under the held-out protocol "
    "(dev seed --seed, as `dataset build --seed`).",
)
@click.option(
    "--split",
    type=click.Choice(["everynoise", "random"]),
    default="everynoise",
    show_default=True,
    help="With --from-csv: the held-out protocol, or the earlier random split (8 %, no lockbox) "
    "that default-v1 and default-v2 were trained with.",
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
    help="Number of random training like: conditions whose honoured rate is measured "
    "(10 genres each).",
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
@click.option(
    "--lockbox",
    is_flag=True,
    help="Measure on the lockbox split instead of the dev split: only to ship, each read is "
    "logged in the adapter's model card.",
)
@click.option(
    "--blends",
    type=click.IntRange(0, 1000),
    default=30,
    show_default=True,
    help="Held-out genres with two parents whose pair is asked for 3 'like: a | b' blends "
    "per seed (0 skips the blend rate).",
)
@click.option(
    "--like-probes/--no-like-probes",
    default=True,
    show_default=True,
    help="Ask for 10 genres like each of 12 fixed conditions per seed (the like: verbatim rate).",
)
@click.option("--json-out", type=click.Path(dir_okay=False), default=None, help="Write the report.")
@click.option(
    "--plot", type=click.Path(dir_okay=False), default=None, help="PNG of the weirdness curve."
)
@click.option(
    "--update-card",
    is_flag=True,
    help="Store the results in the adapter's card (as eval, or eval_lockbox with --lockbox).",
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def eval_command(
    ctx: click.Context,
    count: int,
    adapter: str | None,
    dataset_dir: str | None,
    from_csv: str | None,
    split: str,
    seed: int,
    temperature: float,
    likes: int,
    no_baseline: bool,
    seeds: str | None,
    levels: str,
    lockbox: bool,
    blends: int,
    like_probes: bool,
    json_out: str | None,
    plot: str | None,
    update_card: bool,
    as_json: bool,
) -> None:
    """Quality of N generations vs a markovify baseline on the same training split.

    Unless --no-baseline, also the held-out evaluation on the dev split (--lockbox: the
    lockbox): per seed and weirdness level, N delivered genres with the held-out genres counted
    as novel, how many of them the model re-invents per 1,000 next to 1,000 raw novel outputs
    of markovify (state 1, same training split), the structure shares (seen modifier + known
    genre, other, invented word) of the model's, markovify's and the held-out genres, the raw
    known-genre share, the like: verbatim rate over 12 fixed conditions and the blend rate
    over held-out genres' parent pairs (both at the /genre new default weirdness).
    """
    config = state(ctx).config
    path = adapter_path(config, adapter)
    fair_seeds = _int_list(seeds, "--seeds") if seeds else [seed]
    fair_levels = [] if no_baseline or levels == "none" else _int_list(levels, "--levels")
    if any(not 0 <= level <= 5 for level in fair_levels):
        raise InputError("--levels: weirdness levels are 1 to 5 (0: unranked).")
    if lockbox and not fair_levels:
        raise InputError("--lockbox measures the held-out evaluation: drop --no-baseline.")
    options = EvalOptions(
        count, seed, temperature, likes, no_baseline, fair_seeds, fair_levels,
        lockbox=lockbox, blends=blends, like_probes=like_probes, split=split,
    )  # fmt: skip
    if lockbox:
        _log_lockbox_read(path, ctx, dataset_dir or from_csv)
    result = asyncio.run(_evaluate(config, path, dataset_dir, from_csv, options))
    if update_card:
        key = "eval_lockbox" if lockbox else "eval"
        write_card(path, {**read_card(path), key: result.to_dict()})
    if json_out:
        Path(json_out).write_text(result.to_json() + "\n", encoding="utf-8")
    if plot and result.fair:
        from model.evaluate import plot_weirdness

        plot_weirdness(result.fair, plot)
    if as_json:
        click.echo(result.to_json())
    else:
        click.echo(format_eval_table(result))


def _log_lockbox_read(adapter: Path, ctx: click.Context, split: str | None) -> None:
    """Record the read in the adapter's card before the lockbox is opened: when, the command
    with every option as parsed (seeds, n, levels, ...), and the split it read."""
    entry = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": ctx.command_path,
        "options": {k: v for k, v in ctx.params.items() if k not in ("as_json",)},
        "split": split or "<data_dir>/dataset",
    }
    try:
        reads = log_lockbox_read(adapter, entry)
    except OSError as exc:
        raise InputError(
            f"{adapter}: cannot record the lockbox read in the model card ({exc}); "
            "the lockbox is only read when the read is recorded."
        ) from None
    click.echo(f"lockbox read #{reads}, recorded in {adapter}'s model card", err=True)


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
    lockbox: bool = False  # the lockbox split instead of the dev split
    blends: int = 30  # parent pairs of the blend rate (0: none)
    like_probes: bool = True
    split: str = "everynoise"  # how --from-csv splits: the held-out protocol or "random"


@dataclass
class Split:
    """What the evaluation measures against: training examples, the held-out split (dev or
    lockbox) as examples and with parents, every known name, and the real relations."""

    train: list[Any]
    held: list[Any]  # Examples of the held-out split
    known: list[str]
    source: str
    records: list[Any] = field(default_factory=list)  # relations, as records
    held_genres: list[Any] = field(default_factory=list)  # HeldGenre (with parents)


def _relation_records(relations: dict[str, list[str]]) -> list[dict[str, Any]]:
    return [
        {"display_name": k, "sources": [{"extra": {"similar": v}}]} for k, v in relations.items()
    ]


def _load_split(
    config: Config, dataset_dir: str | None, from_csv: str | None, options: EvalOptions
) -> Split:
    """The split from a genres.csv table (rebuilt under the held-out protocol, dev seed
    ``options.seed``, or randomly) or a dataset folder; the lockbox only with ``--lockbox``."""
    import json

    from model.dataset import (
        RELATIONS_FILE,
        TRAIN_FILE,
        VALID_FILE,
        Example,
        build_dataset,
        read_examples,
        records_from_genres_csv,
    )
    from model.errors import DatasetError
    from model.splits import HoldoutSpec, read_dev_parents, read_lockbox

    lockbox = options.lockbox
    if from_csv:
        if not Path(from_csv).is_file():
            raise InputError(f"{from_csv}: no such file")
        try:
            ds = build_dataset(
                records_from_genres_csv(from_csv),
                seed=options.seed,
                holdout=HoldoutSpec(options.seed) if options.split == "everynoise" else None,
            )
        except DatasetError as exc:
            raise InputError(str(exc)) from None
        if lockbox and not ds.lockbox:
            raise InputError(
                f"{from_csv}: no lockbox (--split random, or no Every Noise genre in the table)."
            )
        held_genres = ds.lockbox if lockbox else ds.dev_held
        held = [Example(g.genre) for g in ds.lockbox] if lockbox else ds.valid
        which = "lockbox" if lockbox else ("dev" if ds.dev_held else "random validation split")
        known = [*ds.known, *(e.genre for e in held)]
        return Split(ds.train, held, known, f"{which} of csv:{from_csv}",
                     _relation_records(ds.relations), held_genres)  # fmt: skip
    folder = Path(dataset_dir) if dataset_dir else config.data_dir / "dataset"
    if not (folder / TRAIN_FILE).is_file():
        raise InputError(
            f"No dataset at {folder}: run `microgenre dataset build` or pass --from-csv PATH."
        )
    train, valid = read_examples(folder / TRAIN_FILE), read_examples(folder / VALID_FILE)
    relations_file = folder / RELATIONS_FILE
    records = (
        _relation_records(json.loads(relations_file.read_text(encoding="utf-8")))
        if relations_file.is_file()
        else []
    )
    known = [e.genre for e in train + valid]
    if lockbox:
        boxed = read_lockbox(folder)
        held = [Example(g.genre) for g in boxed]
        return Split(train, held, known + [e.genre for e in held], f"lockbox of {folder}",
                     records, boxed)  # fmt: skip
    return Split(train, valid, known, f"dev of {folder}", records, read_dev_parents(folder))


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
    from model.quality import LIKE_PROBES, Probes, Vocabulary, blend_pairs
    from model.sampler import LocalBackend

    count, seed, temperature = options.count, options.seed, options.temperature
    likes, no_baseline = options.likes, options.no_baseline
    split = _load_split(config, dataset_dir, from_csv, options)
    train_examples, valid_examples, known_names = split.train, split.held, split.known
    split_source, records = split.source, split.records
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
        "avoid_known": config.model.avoid_known,
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
        # The sampler never ends on what the pipeline rejects as known (``avoid_known``): here
        # the split's training genres only. The adapter's own fingerprint knows the held-out
        # genres too, and avoiding them would forbid the very names the split counts.
        avoid = getattr(sampler, "avoid", None)
        if avoid is not None:
            avoid(sampler.adapter_of_default(), held.fingerprint)
        # The adapter's leading-word prior, as in production (else the split's own).
        prior = fingerprint.leading or LeadingPrior.from_names(e.genre for e in train_examples)

        # A weirdness level chooses from RERANK times the candidates: so many more may be
        # sampled before the call counts as weak (one short of 1 000 at 10 per genre).
        held_sizes = {**sizes, "max_candidates": int(sizes["max_candidates"] * RERANK)}

        def held_out_pipeline(over: Any) -> GenrePipeline:
            return GenrePipeline(
                over, held.fingerprint, moderator, leading_prior=prior, **held_sizes
            )

        train_names = [e.genre for e in train_examples]
        probes = Probes(
            likes=LIKE_PROBES if options.like_probes else (),
            pairs=blend_pairs(split.held_genres, options.blends),
            related=related_words(train_examples, records),
        )
        fair = await fair_evaluation(
            backend,
            held_out_pipeline,
            held,
            train_names,
            n=count,
            seeds=options.fair_seeds,
            levels=[level or None for level in options.fair_levels],
            temperature=temperature,
            vocab=Vocabulary(train_names),
            probes=probes,
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

    def shape(shares: dict[str, Any]) -> str:
        if not shares:
            return "-"
        get = {k: v["mean"] if isinstance(v, dict) else v for k, v in shares.items()}
        return (
            f"seen modifier + known genre {get['modifier_known']:.0%}, other "
            f"{get['other']:.0%}, invented word {get['invented_word']:.0%}"
        )

    summary = fair["summary"]
    base = summary["baseline"]
    markov_n = fair.get("markov_n", fair["n"])
    lines = [
        f"held-out: {fair['n']} delivered per level, seeds {fair['seeds']}, temperature "
        f"{fair['temperature']}, {fair['targets']} held-out genres to re-invent",
        f"  markovify raw novel (state 1, no filters, {markov_n} per seed): re-invents "
        f"{span(base.get('reinvented_per_1000', base['reinvented']))} per 1,000; raw known "
        f"{base['known_rate']['mean']:.1%}; {shape(base.get('structure', {}))}",
    ]
    if fair.get("held_out_structure"):
        lines.append(f"  held-out real genres: {shape(fair['held_out_structure'])}")
    for level, row in summary["levels"].items():
        label = "unranked" if level == "None" else f"weirdness {level}"
        per = row.get("reinvented_per_1000", row["reinvented"])
        lines.append(
            f"  {label}: re-invents {span(per)} per 1,000 = "
            f"{span(row['ratio'], '{:.2f}')}x markovify; raw known "
            f"{row['known_rate']['mean']:.1%}; novel {row['novel']['mean']:.1%}, "
            f"unique {row['unique']['mean']:.1%}, well-formed {row['well_formed']['mean']:.1%}; "
            f"top lead ratio {row['lead_ratio']['max']:.2f} "
            f"({row['lead_ratio_split']['max']:.2f} against the split)"
        )
        if row.get("structure"):
            lines.append(f"    {shape(row['structure'])}")
    for probe in fair.get("like_probe", [])[:1]:
        like = summary["like_probe"]
        lines.append(
            f"  like: {probe['conditions']} fixed conditions, {probe['genres']} genres"
            f" per seed: verbatim + seen words {span(like['verbatim'], '{:.1%}')}, honoured "
            f"{span(like['honoured'], '{:.1%}')}, invented word {like['invented_word']['mean']:.1%}"
        )
    for probe in fair.get("blend", [])[:1]:
        blend = summary["blend"]
        lines.append(
            f"  blends (like: a | b) over {probe['pairs']} held-out parent pairs: related to both "
            f"{span(blend['both'], '{:.1%}')}, to at least one {span(blend['either'], '{:.1%}')}"
        )
    return lines
