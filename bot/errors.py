"""Errors whose message is safe to show to a user or an operator.

The bot turns them into ephemeral replies, the CLI into one line on stderr and a non-zero exit.
Anything that is not a :class:`MicrogenreError` is a bug: it is logged with its traceback and the
user gets a short apology.
"""

from __future__ import annotations

import math


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


def about_seconds(wait_s: float) -> str:
    """A wait as users read it.

    >>> about_seconds(0.2), about_seconds(41.3)
    ('about 1 s', 'about 42 s')
    """
    return f"about {max(1, math.ceil(wait_s))} s"


class QueueRefusedError(MicrogenreError):
    """The fair queue turned a `/genre new` away; ``wait_s`` is the wait it would have had."""

    reason = "refused"

    def __init__(self, message: str, wait_s: float) -> None:
        self.wait_s = wait_s
        super().__init__(message)


class WaitTooLongError(QueueRefusedError):
    """The estimated wait is longer than ``[bot] max_wait_s``."""

    reason = "max_wait"

    def __init__(self, wait_s: float, max_wait_s: float) -> None:
        super().__init__(
            f"The generator is very busy: your request would wait {about_seconds(wait_s)}, "
            f"longer than the {max_wait_s:g} s I let anyone wait. Please try again in a minute.",
            wait_s,
        )


class GuildQueueFullError(QueueRefusedError):
    """The server already has ``[bot] guild_queue_cap`` requests waiting."""

    reason = "guild_cap"

    def __init__(self, waiting: int, wait_s: float) -> None:
        self.waiting = waiting
        super().__init__(
            f"This server already has {waiting} genre requests waiting in line "
            f"({about_seconds(wait_s)} of waiting); try again once the line is shorter.",
            wait_s,
        )


class UserQueueFullError(QueueRefusedError):
    """The user already has ``[bot] user_queue_cap`` requests waiting or generating."""

    reason = "user_cap"

    def __init__(self, active: int, wait_s: float) -> None:
        self.active = active
        super().__init__(
            f"You already have {active} genre requests in line ({about_seconds(wait_s)} to "
            "go); wait for them before asking for more.",
            wait_s,
        )
