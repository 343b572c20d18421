"""What crosses the process boundary between ``microgenre train``/``eval`` and the bot.

``microgenre train --progress-json`` prints one :class:`TrainEvent` per line and
``microgenre eval --json`` prints one :class:`EvalResult`; :mod:`bot.retrain` reads them back with
``from_dict``. The test fakes in ``tests/bot/scripts`` speak the same types. torch-free.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from enum import StrEnum
from typing import Any


class EventKind(StrEnum):
    START = "start"
    STEP = "step"
    EPOCH = "epoch"
    DONE = "done"
    ERROR = "error"


class StopReason(StrEnum):
    """How a training run ended."""

    COMPLETED = "completed"
    EARLY_STOPPED = "early_stopped"
    TIME_LIMIT = "time_limit"  # a server run reached its wall-clock cap (``--max-minutes``)
    CANCELLED = "cancelled"  # by an admin, or Ctrl-C (the checkpoint stays to resume)
    SHUT_DOWN = "shut_down"  # the bot stopped while the run was in progress
    FAILED = "failed"


@dataclass(frozen=True)
class TrainEvent:
    """One progress event; the fields an event kind does not carry are None (and not sent).

    >>> e = TrainEvent(EventKind.STEP, step=3, total_steps=10, loss=1.5, eta_s=7.0)
    >>> e.to_json()
    '{"event": "step", "step": 3, "total_steps": 10, "loss": 1.5, "eta_s": 7.0}'
    >>> TrainEvent.from_json(e.to_json()) == e
    True
    """

    event: EventKind
    step: int | None = None
    total_steps: int | None = None
    epoch: int | None = None
    epochs: int | None = None
    loss: float | None = None
    valid_loss: float | None = None
    best_epoch: int | None = None
    reinvented: int | None = None  # epoch: validation genres re-invented (select_by=reinvention)
    lr: float | None = None
    eta_s: float | None = None
    elapsed_s: float | None = None
    wall_s: float | None = None
    # start
    train_examples: int | None = None
    valid_examples: int | None = None
    trainable_params: int | None = None
    device: str | None = None
    dtype: str | None = None
    resumed: bool | None = None
    # start / done: the dataset folder the run trains from
    dataset: str | None = None
    # done / error
    output: str | None = None
    stop_reason: StopReason | None = None
    message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainEvent:
        """Raises ValueError for an unknown event kind or stop reason; ignores unknown keys."""
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values["event"] = EventKind(str(values.get("event")))
        if values.get("stop_reason") is not None:
            values["stop_reason"] = StopReason(values["stop_reason"])
        return cls(**values)

    @classmethod
    def from_json(cls, line: str) -> TrainEvent:
        data = json.loads(line)
        if not isinstance(data, dict):
            raise ValueError("a training event is a JSON object")
        return cls.from_dict(data)


@dataclass(frozen=True)
class EvalResult:
    """The report of ``microgenre eval``: the model's evaluation table and the markovify
    baseline's (tables of :func:`model.evaluate.evaluate_backend`; ``baseline`` is None with
    ``--no-baseline``). ``fair`` is the held-out evaluation over several seeds and weirdness
    levels (:func:`model.evaluate.fair_evaluation`), None when it did not run.

    >>> r = EvalResult(10, "a", "s", 9, 1, 0.85, {"raw": {"well_formed": 0.9, "novel": 0.7}})
    >>> r.well_formed, r.novel
    (0.9, 0.7)
    >>> EvalResult.from_dict(r.to_dict()) == r
    True
    """

    n: int
    adapter: str
    split: str
    train_genres: int
    valid_genres: int
    temperature: float
    model: dict[str, Any]
    baseline: dict[str, Any] | None = None
    fair: dict[str, Any] | None = None

    @property
    def well_formed(self) -> float:
        """The model's raw well-formed rate."""
        return float(self.model["raw"]["well_formed"])

    @property
    def novel(self) -> float:
        """The model's raw novelty rate (of the well-formed)."""
        return float(self.model["raw"]["novel"])

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for optional in ("baseline", "fair"):
            if data[optional] is None:
                del data[optional]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalResult:
        """Raises ValueError when a field is missing or the model has no raw rates."""
        try:
            result = cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})
            _ = result.well_formed, result.novel  # the model's table must hold both rates
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not an evaluation result ({exc!r})") from None
        return result

    @classmethod
    def from_json(cls, text: str) -> EvalResult:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("an evaluation result is a JSON object")
        return cls.from_dict(data)
