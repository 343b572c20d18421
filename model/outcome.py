"""What one generation call delivered: the result of :meth:`model.pipeline.GenrePipeline.generate`
and the ``partial`` of a :class:`model.errors.GenerationError`.

A module of its own so that the errors and the pipeline both import it, and not each other.

>>> outcome = GenerationOutcome(["glacier dub"], "smollm2+default", {"known": 3})
>>> outcome.genres, outcome.candidates
(['glacier dub'], [])
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class GenerationOutcome:
    """What one :meth:`~model.pipeline.GenrePipeline.generate` call delivered and what it threw
    away (rejection reasons in ``stats``: see :mod:`model.pipeline`)."""

    genres: list[str]
    model: str
    stats: dict[str, int] = field(default_factory=dict)
    # Every candidate with its fate ("ok" or the rejection reason), in sampling order.
    candidates: list[tuple[str, str]] = field(default_factory=list)
