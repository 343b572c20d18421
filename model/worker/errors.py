"""Errors of the generation worker and its clients; every message is a sentence a user may read.

>>> str(WorkerBusyError(retry_after_s=3.2))
'The generator is busy — try again in about 4 s.'
"""

from __future__ import annotations

import math

from model.errors import ModelError


class WorkerError(ModelError):
    """Base class for everything that goes wrong between a client and the model worker."""


class WorkerBusyError(WorkerError):
    """The queue is full: the caller should retry after ``retry_after_s`` seconds."""

    def __init__(self, retry_after_s: float, message: str | None = None) -> None:
        self.retry_after_s = max(1, math.ceil(retry_after_s))
        super().__init__(
            message or f"The generator is busy — try again in about {self.retry_after_s} s."
        )


class WorkerCrashedError(WorkerError):
    """The worker process died (or was killed as hung) while this request was being generated."""


class WorkerUnavailableError(WorkerError):
    """No worker can serve requests right now: it failed to start, or the server is unreachable."""


class WorkerStartError(WorkerUnavailableError):
    """The worker process could not load the model."""


class WorkerTimeoutError(WorkerError):
    """The request was not answered within the configured time."""


class WorkerClosedError(WorkerError):
    """The client was closed (shutdown) before the request was answered."""


class AdapterRejectedError(WorkerError):
    """A hot reload was refused: the adapter failed to load or failed the smoke generation.

    The previous adapter keeps serving.
    """


class InvalidRequestError(WorkerError):
    """The request itself is unacceptable (e.g. over the server's limits)."""


class RemoteAuthError(WorkerError):
    """The remote generation server refused the API token."""


def as_sentence(text: str | None) -> str:
    """``text`` ending with exactly one full stop, to embed in an error message.

    >>> as_sentence("it broke."), as_sentence("it broke"), as_sentence(None)
    ('it broke.', 'it broke.', 'unknown error.')
    """
    return (text or "unknown error").rstrip(". ") + "."
