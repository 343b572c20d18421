"""Errors whose message is safe to show to a user or an operator.

The bot turns them into ephemeral replies, the CLI into one line on stderr and a non-zero exit.
Anything that is not a :class:`MicrogenreError` is a bug: it is logged with its traceback and the
user gets a short apology.
"""

from __future__ import annotations


class MicrogenreError(Exception):
    """Base class: ``str(error)`` is a complete sentence a user may read."""

    exit_code = 1


class ConfigError(MicrogenreError):
    """The configuration file or an environment override is invalid."""

    exit_code = 2

    def __init__(self, source: str, key: str | None, problem: str) -> None:
        self.source = source
        self.key = key
        self.problem = problem
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {problem}")


class SchemaOutOfDateError(MicrogenreError):
    """The database schema is not at the newest migration."""

    exit_code = 3


class StoreError(MicrogenreError):
    """The store could not be reached or refused an operation."""


class InputError(MicrogenreError):
    """A file, page or argument given by the user cannot be used."""

    exit_code = 2
