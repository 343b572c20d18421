"""`microgenre model head-tokens`: the token ids an adapter's restricted output head keeps.

Writes ``head_tokens.json`` into the adapter folder (:mod:`model.fastpath`): the tokens of the
genre names it was trained on (``--genres``: one name per line, or a CSV with a ``genre``
column), the end marker's tokens, and the tokens the adapter itself emits in ``--samples``
completions at ``--temperature``. Sampling with ``[model] restrict_head`` then scores only
those tokens at each step instead of the whole vocabulary.
"""

from __future__ import annotations

import csv
from pathlib import Path

import click

from bot.cli.common import adapter_path, state


def read_names(path: Path) -> list[str]:
    """Genre names from a CSV with a ``genre`` column, else one name per line."""
    text = path.read_text(encoding="utf-8")
    first = text.splitlines()[0] if text else ""
    if "," in first and "genre" in first.split(","):
        return [row["genre"] for row in csv.DictReader(text.splitlines()) if row.get("genre")]
    return [line.strip() for line in text.splitlines() if line.strip()]


@click.command("head-tokens")
@click.option("--adapter", "adapter", default=None, help="Adapter folder (default: configured).")
@click.option(
    "--genres",
    "genres",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="The adapter's training genres: one per line, or a CSV with a 'genre' column.",
)
@click.option("--samples", default=2048, show_default=True, help="Completions for the margin.")
@click.option("--temperature", default=1.0, show_default=True, help="Of the margin samples.")
@click.option("--seed", default=0, show_default=True)
@click.pass_context
def head_tokens(
    ctx: click.Context,
    adapter: str | None,
    genres: Path,
    samples: int,
    temperature: float,
    seed: int,
) -> None:
    """Write the adapter's head_tokens.json (the tokens a restricted output head keeps)."""

    from model.fastpath import FastSettings, collect_head_tokens, write_head_tokens
    from model.sampler import Sampler

    config = state(ctx).config
    folder = adapter_path(config, adapter)
    names = read_names(genres)
    sampler = Sampler.load(
        config.model.spec(),
        folder,
        data_dir=config.data_dir,
        fast=FastSettings(quantize=False, restrict_head=False),
    )
    tokens = collect_head_tokens(
        sampler, names, samples=samples, temperature=temperature, seed=seed
    )
    meta = {"genres": len(names), "samples": samples, "temperature": temperature, "seed": seed}
    path = write_head_tokens(folder, tokens, meta)
    click.echo(f"{path}: {len(tokens)} of {len(sampler.tokenizer)} tokens")
