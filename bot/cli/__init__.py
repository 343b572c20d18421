"""The `microgenre` command line.

Each command group lives in its own module; :data:`main` registers them all here. Errors that a
user can act on (:class:`~bot.errors.MicrogenreError`) become one line on stderr and a non-zero
exit status, never a traceback.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import click

# Modules, not their commands: a command named like its module (``db``, ``serve``) imported by
# name would shadow the submodule on this package (``import bot.cli.db`` would get the group).
from bot.cli import (
    bot,
    calibrate,
    dataset,
    db,
    evaluate,
    generate,
    invite,
    scrape,
    serve,
    stats,
    train,
    versions,
)
from bot.cli.common import CliState, run_cli
from bot.errors import MicrogenreError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="TOML configuration file (default: ./config.toml when present, else built-in defaults).",
)
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, verbose: int) -> None:
    """Invent musical micro-genres that do not exist yet."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx.obj = CliState(config_path=config_path)


for command in (
    bot.bot_command,
    db.db,
    dataset.dataset,
    train.train,
    train.server_run,
    generate.generate,
    evaluate.eval_command,
    versions.model,
    scrape.scrape,
    serve.serve,
    stats.stats,
    invite.invite,
):
    main.add_command(command)
versions.model.add_command(calibrate.head_tokens)


def entry(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit status (used by tests and `python -m bot`)."""
    return run_cli(main, argv)


def cli_main() -> None:
    """Console-script entry point."""
    sys.exit(entry())


__all__ = ["MicrogenreError", "cli_main", "entry", "main"]
