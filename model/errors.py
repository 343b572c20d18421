"""Errors raised by the model library whose message is safe to show to a user or an operator.

``model/`` never imports the bot, so this hierarchy does not derive from
``bot.errors.MicrogenreError``; the bot and the CLI treat :class:`ModelError` the same way
(one readable line, no traceback).
"""

from __future__ import annotations

from model.outcome import GenerationOutcome


class ModelError(Exception):
    """Base class: ``str(error)`` is a complete sentence a user may read."""

    exit_code = 1


class ModelLoadError(ModelError):
    """The base model or an adapter cannot be found or loaded."""

    exit_code = 2


class GenerationError(ModelError):
    """The model could not deliver the requested genres within the attempt budget.

    ``partial`` is what was delivered before the budget ran out (None when nothing was
    attempted, e.g. for a bad argument).
    """

    def __init__(self, message: str, partial: GenerationOutcome | None = None) -> None:
        super().__init__(message)
        self.partial = partial


class TrainingError(ModelError):
    """Training cannot start or failed (bad data, bad options, interrupted)."""


class DatasetError(ModelError):
    """The training data is missing, empty or malformed."""

    exit_code = 2
