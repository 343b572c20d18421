"""A run's progress, its outcome, and the one writer of its state in the store.

:class:`RunRecord` is the only code in :mod:`bot.retrain` that writes a run's row: its phase,
its progress numbers (throttled to ``progress_edit_interval_s``, like the Discord edits it
triggers) and its final status. Each write is followed by the run's progress callback, so the
store and the progress message never disagree for long.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.store import runs as runs_store
from bot.store.engine import SessionMaker
from bot.store.models import RUN_RUNNING, RUN_SUCCEEDED
from bot.text import format_duration
from model.events import EventKind, TrainEvent

log = logging.getLogger(__name__)

LOSS_CURVE = "loss_curve.png"


@dataclass
class Progress:
    """What the progress message shows."""

    run_id: int
    status: str = "pending"
    phase: str = "queued"  # queued, starting, training, evaluating, activating, finished
    step: int = 0
    total_steps: int = 0
    epoch: int | None = None
    loss: float | None = None
    eta_s: float | None = None
    voted_genres: int = 0
    losses: list[tuple[int, float]] = field(default_factory=list)
    # Place in the machine's retraining queue while queued (1 = next to train).
    position: int | None = None
    guild_id: int | None = None

    @property
    def fraction(self) -> float:
        return self.step / self.total_steps if self.total_steps else 0.0

    def apply(self, event: TrainEvent) -> None:
        """Take the numbers a training event carries."""
        self.total_steps = event.total_steps if event.total_steps is not None else self.total_steps
        self.step = event.step if event.step is not None else self.step
        self.eta_s = event.eta_s if event.eta_s is not None else self.eta_s
        self.epoch = event.epoch if event.epoch is not None else self.epoch
        if event.loss is not None:
            self.loss = event.loss
            if event.event == EventKind.STEP:
                self.losses.append((self.step, self.loss))
        if event.event == EventKind.DONE:
            self.step = self.total_steps or self.step

    def summary(self) -> str:
        """One line, e.g. ``run #3 training, step 40/100, loss 1.234, about 2m left``.

        >>> Progress(4, position=2).summary()
        'run #4 queued, position 2 in line'
        """
        parts = [f"run #{self.run_id} {self.phase}"]
        if self.phase == "queued" and self.position is not None:
            parts.append(f"position {self.position} in line")
        if self.total_steps:
            parts.append(f"step {self.step}/{self.total_steps}")
        if self.loss is not None:
            parts.append(f"loss {self.loss:.3f}")
        if self.eta_s is not None and self.phase == "training":
            parts.append(f"about {format_duration(self.eta_s)} left")
        return ", ".join(parts)


@dataclass
class RunOutcome:
    run_id: int
    status: str  # succeeded, rejected, failed, cancelled
    reason: str
    metrics: dict[str, Any] = field(default_factory=dict)
    baseline: dict[str, Any] = field(default_factory=dict)
    adapter: str | None = None
    loss_curve: Path | None = None
    progress: Progress | None = None

    def result(self) -> dict[str, Any]:
        """What the run's row keeps of the outcome (its ``result`` column)."""
        return {
            "reason": self.reason,
            "metrics": self.metrics,
            "baseline": self.baseline,
            "adapter": self.adapter,
        }


ProgressCallback = Callable[[Progress], Awaitable[None]]
FinishCallback = Callable[[RunOutcome], Awaitable[None]]
Callbacks = tuple[ProgressCallback | None, FinishCallback | None]


async def call_safely(callback: Callable[[Any], Awaitable[None]], value: Any) -> None:
    """Run a progress or finish callback; a failing one is logged, never raised."""
    try:
        await callback(value)
    except Exception:
        log.warning("a retraining callback failed", exc_info=True)


class RunRecord:
    """The one writer of a running run's state: its row in the store and its progress."""

    def __init__(
        self,
        sessions: SessionMaker,
        progress: Progress,
        on_progress: ProgressCallback | None,
        *,
        interval_s: float,
    ) -> None:
        self.sessions = sessions
        self.progress = progress
        self.on_progress = on_progress
        self.interval_s = interval_s
        # The dataset folder the training command reports (kept in the run's options, so a
        # restart after a crash knows what to delete).
        self.dataset: Path | None = None
        self._last_report = 0.0

    @property
    def run_id(self) -> int:
        return self.progress.run_id

    async def training(self, voted_genres: int) -> None:
        """The run's data is written: it trains now."""
        self.progress.voted_genres = voted_genres
        self.progress.status = RUN_RUNNING
        self.progress.phase = "training"
        await runs_store.update_run(
            self.sessions,
            self.run_id,
            phase="training",
            options={"voted_genres": voted_genres},
        )

    async def phase(self, phase: str) -> None:
        """Enter ``phase`` (evaluating, activating) and say so at once."""
        self.progress.phase = phase
        await runs_store.update_run(self.sessions, self.run_id, phase=phase)
        await self.report(force=True)

    async def event(self, event: TrainEvent) -> None:
        """A training event: take its numbers; report at start and end, else throttled."""
        self.progress.apply(event)
        if event.dataset and self.dataset is None:
            self.dataset = Path(event.dataset)
            options = {"voted_genres": self.progress.voted_genres, "dataset": event.dataset}
            await runs_store.update_run(self.sessions, self.run_id, options=options)
        await self.report(force=event.event in (EventKind.START, EventKind.DONE))

    async def report(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_report < self.interval_s:
            return
        self._last_report = now
        await runs_store.update_run(self.sessions, self.run_id, **self._numbers())
        if self.on_progress is not None:
            try:
                await self.on_progress(self.progress)
            except Exception:
                log.warning("progress report of run %s failed", self.run_id, exc_info=True)

    async def finish(self, outcome: RunOutcome) -> None:
        """Record the run's final status, reason and numbers."""
        self.progress.phase = "finished"
        self.progress.status = outcome.status
        outcome.progress = self.progress
        await runs_store.update_run(
            self.sessions,
            self.run_id,
            status=outcome.status,
            error=None if outcome.status == RUN_SUCCEEDED else outcome.reason,
            result=outcome.result(),
            **self._numbers(),
        )

    def _numbers(self) -> dict[str, Any]:
        p = self.progress
        return {
            "progress": p.fraction,
            "step": p.step,
            "total_steps": p.total_steps,
            "loss": p.loss,
        }


def render_loss_curve(losses: Sequence[tuple[int, float]], path: Path) -> Path | None:
    """Plot (step, loss) pairs to ``path``; None when there is nothing to plot. Blocking."""
    if not losses:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.5), dpi=100)
    ax = fig.add_subplot()
    steps, values = zip(*losses, strict=True)
    ax.plot(steps, values, color="#7a5cff")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("Retraining loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path
