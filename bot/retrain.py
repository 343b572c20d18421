"""Retraining from Discord: each server teaches its own adapter, one run per machine at a time.

``/retrain start`` queues a run of the server (:class:`RetrainManager`, the queue lives in the
database: :mod:`bot.store.runs`), refused with the reason and the time it becomes possible
while the server has a run queued or running, is within ``[bot] retrain_cooldown_h`` of its
last run, or has fewer than ``[bot] retrain_min_votes`` votes since then. The process holding
the machine's training slot takes the oldest queued run; queued runs hear their place in line.
A run:

1. writes the server's training data to ``<data>/runs/run-NNNN/`` (:meth:`_write_dataset`);
2. runs ``microgenre train --progress-json --output DIR ...`` as a subprocess and follows its
   :class:`~model.events.TrainEvent` lines, reporting progress to a callback at most every
   ``progress_edit_interval_s``;
3. evaluates the new adapter and the server's current one on the run's validation split with
   ``microgenre eval --adapter DIR --dataset DIR --json``, which prints an
   :class:`~model.events.EvalResult` (the current model's stored evaluation is the fall-back
   when it cannot be evaluated);
4. only if it passes :func:`quality_gate`: checks that the worker loads it, then in one
   transaction registers it as a ``ModelVersion`` of the server, makes it the server's active
   model and marks the run succeeded; then the service serves it to that server (each request
   names its adapter, so no other server's model changes).

A cancelled or failed run deletes what it left half-made (adapter folder, checkpoints in
``<adapter>.work``, its dataset) unless a model version points to it; its logs stay in the run
folder. A rejected adapter is kept for inspection. A stop (cancel, SIGTERM) before the commit
leaves the server on its model; after it, the run has succeeded. A run interrupted by a crash
is marked failed at the next start-up or when its lease expires (:meth:`RetrainManager.recover`).

The commands are injectable (``[bot] train_command`` / ``eval_command``), so tests run a small
script instead of real training.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.errors import MicrogenreError
from bot.retrain_data import VOTES_FILE, server_run_command, write_votes_file
from bot.store import runs as runs_store
from bot.store import versions as versions_store
from bot.store.models import (
    RUN_CANCELLED,
    RUN_FAILED,
    RUN_REJECTED,
    RUN_RUNNING,
    RUN_SUCCEEDED,
)
from bot.store.runs import RetrainRefusedError as RetrainRefusedError
from bot.text import format_duration
from model.events import EvalResult, EventKind, StopReason, TrainEvent

if TYPE_CHECKING:
    from bot.config import BotConfig, Config
    from bot.service import GenreService
    from bot.store.engine import SessionMaker

log = logging.getLogger(__name__)

TRAIN_LOG = "train.log"
EVAL_LOG = "eval.log"
EVAL_ACTIVE_LOG = "eval-active.log"
# Evaluation settings of the default `microgenre eval` command line: no markovify baseline and no
# like: conditions (the gate needs neither), 300 samples per adapter.
# The gate measures raw novelty at the temperature its thresholds ([bot] retrain_min_*) were set
# for: 0.85. Generation defaults to 0.75 since, where more raw outputs are real genres (the
# shipped adapter's raw novelty 53.5 % at 0.85, 41.3 % at 0.75), though delivered ones never are.
GATE_TEMPERATURE = "0.85"
DEFAULT_EVAL_ARGS = (
    "--no-baseline",
    "--likes",
    "0",
    "-n",
    "300",
    "--temperature",
    GATE_TEMPERATURE,
)
LOSS_CURVE = "loss_curve.png"
GATE_METRICS = ("well_formed", "novel")
# Not passed on to the training and evaluation processes, which never talk to Discord.
SECRET_VARIABLES = frozenset({"DISCORD_TOKEN", "MICROGENRE_DISCORD_TOKEN"})
# The status of a run stopped from the bot (an admin's cancel, or the bot shutting down).
STOPPED_STATUS = {StopReason.CANCELLED: RUN_CANCELLED, StopReason.SHUT_DOWN: RUN_FAILED}


class NoRunError(MicrogenreError):
    def __init__(self) -> None:
        super().__init__("This server has no retraining run queued or in progress.")


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


ProgressCallback = Callable[[Progress], Awaitable[None]]
FinishCallback = Callable[[RunOutcome], Awaitable[None]]


def gate_metrics(result: EvalResult) -> dict[str, float]:
    """The numbers the gate compares: the model's raw well-formed and novelty rates.

    >>> table = {"raw": {"well_formed": 0.9, "novel": 0.7, "n": 10}}
    >>> gate_metrics(EvalResult(10, "run-0001", "valid", 90, 10, 0.85, table))
    {'well_formed': 0.9, 'novel': 0.7}
    """
    return {"well_formed": result.well_formed, "novel": result.novel}


def quality_gate(
    new: dict[str, float], old: dict[str, float] | None, bounds: BotConfig
) -> tuple[bool, list[str]]:
    """Whether a new adapter may replace the active one, and why not.

    >>> from bot.config import BotConfig
    >>> quality_gate({"well_formed": 0.9, "novel": 0.6}, {"well_formed": 0.92, "novel": 0.6},
    ...              BotConfig())
    (True, [])
    >>> quality_gate({"well_formed": 0.7, "novel": 0.6}, None, BotConfig())[1]
    ['well-formed rate 0.70 is below the minimum 0.80']
    """
    reasons: list[str] = []
    if not new:
        return False, ["the evaluation produced no well-formed/novelty numbers"]
    floors = {"well_formed": bounds.gate_min_well_formed, "novel": bounds.gate_min_novel}
    labels = {"well_formed": "well-formed rate", "novel": "novelty rate"}
    for name in GATE_METRICS:
        value = new.get(name, 0.0)
        if value < floors[name]:
            reasons.append(f"{labels[name]} {value:.2f} is below the minimum {floors[name]:.2f}")
        if old and name in old and value < old[name] - bounds.gate_max_regression:
            reasons.append(
                f"{labels[name]} {value:.2f} is worse than the active model's {old[name]:.2f}"
            )
    return not reasons, reasons


def default_command(subcommand: str, config_file: str | None = None) -> list[str]:
    """``microgenre [--config FILE] <subcommand>`` run by this Python interpreter.

    >>> default_command("train", "/etc/mg.toml")[2:]
    ['bot', '--config', '/etc/mg.toml', 'train']
    """
    config = ["--config", config_file] if config_file else []
    return [sys.executable, "-m", "bot", *config, subcommand]


def child_environment() -> dict[str, str]:
    """The bot's environment for training/evaluation processes, without the Discord token."""
    return {k: v for k, v in os.environ.items() if k not in SECRET_VARIABLES}


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


def holder_id() -> str:
    """Who holds the training slot: ``host:pid:random`` (unique per process)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def holder_is_dead(holder: str) -> bool:
    """Whether ``holder`` (see :func:`holder_id`) was a process of this machine that is gone.

    >>> holder_is_dead(holder_id())
    False
    >>> holder_is_dead("elsewhere:1:abc")
    False
    """
    host, _, rest = holder.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def version_name(run_id: int, guild_id: int | None) -> str:
    """The served name of a run's adapter.

    >>> version_name(7, 123), version_name(7, None)
    ('guild-123-run-0007', 'run-0007')
    """
    return f"run-{run_id:04d}" if guild_id is None else f"guild-{guild_id}-run-{run_id:04d}"


Callbacks = tuple[ProgressCallback | None, FinishCallback | None]
# Callbacks for a run queued by another process (or before a restart): the cog edits the
# run's stored message through the channel.
Notifier = Callable[[runs_store.RunInfo], Callbacks]


class RetrainManager:
    """Runs the machine's retraining queue, one run at a time (see the module docstring)."""

    def __init__(
        self,
        config: Config,
        sessions: SessionMaker,
        service: GenreService,
        *,
        train_command: Sequence[str] | None = None,
        eval_command: Sequence[str] | None = None,
        lease_s: float = 60.0,
        poll_s: float = 5.0,
    ) -> None:
        self.config = config
        self.sessions = sessions
        self.service = service
        bot_cfg = config.bot
        # The children read the same configuration file as the bot (and its environment).
        source = Path(config.source)
        config_file = str(source.resolve()) if source.is_file() else None
        self.train_command = list(
            train_command or bot_cfg.train_command or default_command("train", config_file)
        )
        self.eval_command = list(
            eval_command
            or bot_cfg.eval_command
            or [*default_command("eval", config_file), *DEFAULT_EVAL_ARGS]
        )
        self.lease_s = lease_s
        self.poll_s = poll_s
        self.holder = holder_id()
        self.notifier: Notifier | None = None
        # The run this process trains now.
        self.progress: Progress | None = None
        self._task: asyncio.Task[RunOutcome] | None = None
        self._proc: asyncio.subprocess.Process | None = None
        # Why the bot stopped the current run, and the message recorded with it.
        self._stop: tuple[StopReason, str] | None = None
        # Set once the run's version is committed: from then on nothing may stop or undo it.
        self._committed = False
        self._lock = asyncio.Lock()
        self._callbacks: dict[int, Callbacks] = {}
        self._told: dict[int, int] = {}
        self._poller: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    # ------------------------------------------------------------------ queue

    async def recover(self) -> list[int]:
        """At start-up: end the lease of a dead process of this machine, mark runs no live
        process holds as failed (their unregistered outputs are deleted), then start taking
        queued runs. Queued runs stay queued."""
        holder, _ = await runs_store.lease_holder(self.sessions)
        if holder is not None and holder_is_dead(holder):
            await runs_store.expire_lease(self.sessions, holder)
        ids = await runs_store.fail_interrupted_runs(
            self.sessions, "interrupted: the bot restarted while it was running"
        )
        for run_id in ids:
            await self._discard(run_id)
        if ids:
            log.warning("marked interrupted training runs as failed: %s", ids)
        # Queued runs start from the poller, once the cogs are loaded (their messages).
        self._ensure_poller()
        return ids

    async def start(
        self,
        *,
        requested_by: int | None,
        guild_id: int | None,
        channel_id: int | None,
        on_progress: ProgressCallback | None = None,
        on_finish: FinishCallback | None = None,
    ) -> Progress:
        """Queue a run of ``guild_id``; it starts at once when the machine's slot is free.

        Raises :class:`~bot.store.runs.RetrainRefusedError` (why, and when it will be
        possible) for a server with a run already queued or running, in its cool-down, or
        with too few votes since its last run.
        """
        bot_cfg = self.config.bot
        info = await runs_store.enqueue_run(
            self.sessions,
            requested_by=requested_by,
            guild_id=guild_id,
            channel_id=channel_id,
            options={},
            cooldown_h=bot_cfg.retrain_cooldown_h,
            min_votes=bot_cfg.retrain_min_votes,
        )
        self._callbacks[info.id] = (on_progress, on_finish)
        self._ensure_poller()
        await self.pump()
        if self.progress is not None and self.progress.run_id == info.id:
            return self.progress
        position = await runs_store.queue_position(self.sessions, info.id)
        self._told[info.id] = position or 0
        return Progress(info.id, phase="queued", position=position, guild_id=guild_id)

    async def pump(self) -> None:
        """Start the oldest queued run when this machine's slot is free; tell queued runs of
        this process their new place in line."""
        async with self._lock:
            if not self.running and not self._closing:
                info = await runs_store.claim_next(self.sessions, self.holder, self.lease_s)
                if info is not None:
                    self._begin(info)
            await self._tell_positions()

    async def _tell_positions(self) -> None:
        for run_id, (on_progress, _) in list(self._callbacks.items()):
            position = await runs_store.queue_position(self.sessions, run_id)
            if position is None:  # cancelled, or taken by another process
                self._callbacks.pop(run_id, None)
                self._told.pop(run_id, None)
                continue
            if self._told.get(run_id) != position and on_progress is not None:
                self._told[run_id] = position
                await _call(on_progress, Progress(run_id, phase="queued", position=position))

    def _begin(self, info: runs_store.RunInfo) -> None:
        callbacks = self._callbacks.pop(info.id, None)
        self._told.pop(info.id, None)
        if callbacks is None:
            callbacks = self.notifier(info) if self.notifier is not None else (None, None)
        self.progress = Progress(
            info.id, status=RUN_RUNNING, phase="starting", guild_id=info.guild_id
        )
        self._stop = None
        self._committed = False
        self._task = asyncio.get_running_loop().create_task(
            self._run(info, *callbacks), name=f"retrain-{info.id}"
        )
        self._task.add_done_callback(self._after_run)

    def _after_run(self, _task: asyncio.Task[RunOutcome]) -> None:
        if not self._closing:
            asyncio.get_running_loop().create_task(self.pump(), name="retrain-pump")

    def _ensure_poller(self) -> None:
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll(), name="retrain-poll")

    async def _poll(self) -> None:
        """Take runs freed by other processes (their run ended, their lease expired)."""
        while not self._closing:
            await asyncio.sleep(self.poll_s)
            try:
                await self.pump()
            except Exception:
                log.warning("checking the retraining queue failed", exc_info=True)

    async def wait(self) -> RunOutcome | None:
        """Wait for the current run (tests, shutdown)."""
        if self._task is None:
            return None
        return await asyncio.shield(self._task)

    def progress_of(self, guild_id: int | None) -> Progress | None:
        """The live progress of ``guild_id``'s run when this process trains it."""
        if self.running and self.progress is not None and self.progress.guild_id == guild_id:
            return self.progress
        return None

    async def cancel(self, guild_id: int | None, reason: str = "cancelled by an admin") -> Progress:
        """Cancel ``guild_id``'s queued or running run (a run of another process stops at
        its holder's next heartbeat). Raises :class:`NoRunError` when it has none."""
        run = await runs_store.active_run(self.sessions, guild_id)
        if run is None:
            raise NoRunError()
        local = self.progress_of(guild_id)
        if local is not None and local.run_id == run.id:
            if not self._committed:
                self._stop = (StopReason.CANCELLED, reason)
                self._terminate()
            return local
        info = await runs_store.cancel_run(self.sessions, run.id, reason)
        if info is None:
            raise NoRunError()
        if info.status == RUN_CANCELLED:  # it was queued
            _, on_finish = self._callbacks.pop(run.id, (None, None))
            if on_finish is not None:
                await _call(on_finish, RunOutcome(run.id, RUN_CANCELLED, reason))
            await self.pump()
        return Progress(run.id, status=info.status, phase=info.phase, guild_id=guild_id)

    async def shutdown(self) -> None:
        """Stop a run because the bot stops; it is recorded as failed, the queue stays."""
        self._closing = True
        if self._poller is not None:
            self._poller.cancel()
        if self.running:
            self._stop = (StopReason.SHUT_DOWN, "the bot shut down during the run")
            self._terminate()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._task), 15)  # type: ignore[arg-type]
        with contextlib.suppress(Exception):
            await runs_store.release_lease(self.sessions, self.holder)

    def _terminate(self) -> None:
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            asyncio.get_running_loop().call_later(5, self._kill, proc)
        elif (
            self._task is not None
            and not self._task.done()
            and (self.progress is None or self.progress.phase != "activating")
        ):
            # (While activating, the run checks ``_stop`` itself before it commits.)
            self._task.cancel()

    @staticmethod
    def _kill(proc: asyncio.subprocess.Process) -> None:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

    async def _heartbeat(self, run_id: int) -> None:
        """Renew the lease; stop the run when a cancel arrives from any process."""
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                reason = await runs_store.renew_lease(
                    self.sessions, self.holder, run_id, self.lease_s
                )
            except Exception:
                log.warning("renewing the retraining lease failed", exc_info=True)
                continue
            if reason is not None and self._stop is None and not self._committed:
                lost = reason == runs_store.LEASE_LOST
                self._stop = (StopReason.SHUT_DOWN if lost else StopReason.CANCELLED, reason)
                self._terminate()

    async def _discard(self, run_id: int) -> None:
        """Delete a run's half-made outputs, unless a model version points to its adapter."""
        adapter_dir = self.config.data_dir / "adapters" / f"run-{run_id:04d}"
        if str(adapter_dir) in await versions_store.referenced_paths(self.sessions):
            return
        await asyncio.to_thread(
            discard_outputs, adapter_dir, self.config.data_dir / "datasets" / adapter_dir.name
        )

    # ------------------------------------------------------------------ the run

    async def _run(
        self,
        info: runs_store.RunInfo,
        on_progress: ProgressCallback | None,
        on_finish: FinishCallback | None,
    ) -> RunOutcome:
        progress = self.progress
        assert progress is not None
        run_id = info.id
        run_dir = self.config.data_dir / "runs" / f"run-{run_id:04d}"
        adapter_dir = self.config.data_dir / "adapters" / f"run-{run_id:04d}"
        heartbeat = asyncio.get_running_loop().create_task(self._heartbeat(run_id))
        try:
            outcome = await self._train_and_gate(info, run_dir, adapter_dir, progress, on_progress)
        except asyncio.CancelledError:
            outcome = RunOutcome(run_id, RUN_CANCELLED, "cancelled")
        except MicrogenreError as exc:
            outcome = RunOutcome(run_id, RUN_FAILED, str(exc))
        except Exception as exc:
            log.exception("retraining run %s failed unexpectedly", run_id)
            outcome = RunOutcome(run_id, RUN_FAILED, f"unexpected error: {exc}")
        finally:
            heartbeat.cancel()
        if self._stop is not None and outcome.status not in (RUN_SUCCEEDED, RUN_REJECTED):
            stop_reason, outcome.reason = self._stop
            outcome.status = STOPPED_STATUS[stop_reason]
        # The database is the truth: a committed version means the run succeeded, whatever
        # interrupted it afterwards, and its folder stays.
        committed = await versions_store.find_version(
            self.sessions, version_name(run_id, info.guild_id)
        )
        if committed is not None and outcome.status != RUN_SUCCEEDED:
            outcome.status, outcome.reason = RUN_SUCCEEDED, f"activated as {committed.name}"
            outcome.adapter = committed.path
            self.service.model_changed(info.guild_id)
        if outcome.status in (RUN_CANCELLED, RUN_FAILED) and outcome.adapter is None:
            # Nothing was evaluated or registered: the half-trained adapter, its checkpoints
            # and its dataset are of no use (the logs in the run folder stay).
            await self._discard(run_id)
        outcome.progress = progress
        if outcome.loss_curve is None and progress.losses:
            run_dir.mkdir(parents=True, exist_ok=True)
            outcome.loss_curve = await asyncio.to_thread(
                render_loss_curve, progress.losses, run_dir / LOSS_CURVE
            )
        progress.phase = "finished"
        progress.status = outcome.status
        await runs_store.update_run(
            self.sessions,
            run_id,
            status=outcome.status,
            error=None if outcome.status == RUN_SUCCEEDED else outcome.reason,
            result=_result(outcome),
            progress=progress.fraction,
            step=progress.step,
            total_steps=progress.total_steps,
            loss=progress.loss,
        )
        with contextlib.suppress(Exception):
            await runs_store.release_lease(self.sessions, self.holder)
        log.info("retraining run %s %s: %s", run_id, outcome.status, outcome.reason)
        self.service.metrics.retrain_runs.labels(outcome.status).inc()
        if on_finish is not None:
            await _call(on_finish, outcome)
        return outcome

    async def _write_dataset(self, info: runs_store.RunInfo, run_dir: Path) -> tuple[Path, int]:
        """Write the run's extra training data; returns the file and how many genres it has."""
        # The server's 👍/👎 (net score > 0: more like this, < 0: less), see bot.retrain_data.
        votes_file = run_dir / VOTES_FILE
        counts = await write_votes_file(self.sessions, info.guild_id, votes_file)
        return votes_file, counts.total

    async def _set_phase(
        self, run_id: int, phase: str, progress: Progress, on_progress: ProgressCallback | None
    ) -> None:
        progress.phase = phase
        await runs_store.update_run(self.sessions, run_id, phase=phase)
        await self._report(run_id, progress, on_progress, force=True)

    async def _train_and_gate(
        self,
        info: runs_store.RunInfo,
        run_dir: Path,
        adapter_dir: Path,
        progress: Progress,
        on_progress: ProgressCallback | None,
    ) -> RunOutcome:
        run_id, guild_id = info.id, info.guild_id
        # The server's current model: the gate's baseline.
        current = await versions_store.serving_version(self.sessions, guild_id)
        extra_file, count = await self._write_dataset(info, run_dir)
        progress.voted_genres = count
        progress.status = RUN_RUNNING
        progress.phase = "training"
        await runs_store.update_run(
            self.sessions, run_id, phase="training", options={"voted_genres": count}
        )
        # A server run: a short fine-tune of the server's current adapter on its votes.
        command = server_run_command(
            self.train_command,
            output=adapter_dir,
            votes_file=extra_file,
            from_adapter=current.path if current is not None else None,
        )
        await self._train(run_id, command, run_dir / TRAIN_LOG, progress, on_progress)

        await self._set_phase(run_id, "evaluating", progress, on_progress)
        # Both adapters are evaluated on the validation split of this run's dataset (built by
        # `microgenre train` in <data>/datasets/<adapter folder name>), so they compare fairly.
        dataset = self.config.data_dir / "datasets" / adapter_dir.name
        evaluation = await self._evaluate(str(adapter_dir), dataset, run_dir / EVAL_LOG)
        baseline: EvalResult | None
        try:
            baseline = await self._evaluate(
                current.path if current is not None else None, dataset, run_dir / EVAL_ACTIVE_LOG
            )
        except MicrogenreError as exc:
            # The active adapter could not be evaluated now: fall back to its stored evaluation.
            log.warning("evaluating the active model failed (%s); using its stored numbers", exc)
            baseline = _stored_evaluation(current.metrics if current is not None else {})
        new = gate_metrics(evaluation)
        old = gate_metrics(baseline) if baseline is not None else {}
        passed, reasons = quality_gate(new, old or None, self.config.bot)
        curve = adapter_dir / LOSS_CURVE
        outcome = RunOutcome(
            run_id,
            RUN_REJECTED,
            "; ".join(reasons),
            metrics=new,
            baseline=old,
            adapter=str(adapter_dir),
            loss_curve=curve if curve.is_file() else None,
        )
        if not passed:
            return outcome
        await self._set_phase(run_id, "activating", progress, on_progress)
        await self._activate(
            info, adapter_dir, {**new, "evaluation": evaluation.to_dict()}, outcome
        )
        return outcome

    async def _activate(
        self,
        info: runs_store.RunInfo,
        adapter_dir: Path,
        metrics: dict[str, Any],
        outcome: RunOutcome,
    ) -> None:
        """Check that the worker loads the adapter, then commit the version and the run's
        success in one transaction, then tell the service. A stop before the commit leaves the
        server on its current model; nothing stops the run after it."""
        from model.protocol import AdapterRef

        ref = AdapterRef(version_name(info.id, info.guild_id), str(adapter_dir))
        try:
            await self.service.prepare(ref)
        except Exception as exc:
            outcome.status = RUN_FAILED
            outcome.reason = f"the worker rejected the new adapter: {exc}"
            return
        if self._stop is not None:
            raise asyncio.CancelledError()
        outcome.status = RUN_SUCCEEDED
        outcome.reason = f"activated as {ref.name}"
        version = await runs_store.finish_activated(
            self.sessions,
            info.id,
            name=ref.name,
            path=ref.path,
            base_model=self.config.model.base_model,
            metrics=metrics,
            guild_id=info.guild_id,
            result=_result(outcome),
        )
        self._committed = True
        self.service.model_changed(info.guild_id)
        log.info("server %s now uses %s", info.guild_id, version.name)

    async def _spawn(self, command: list[str], log_path: Path) -> asyncio.subprocess.Process:
        log_file = await asyncio.to_thread(log_path.open, "ab")
        try:
            return await asyncio.create_subprocess_exec(
                *command,
                stdout=asyncio.subprocess.PIPE,
                stderr=log_file,
                stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True,
                env=child_environment(),
            )
        except OSError as exc:
            raise MicrogenreError(f"cannot run {command[0]}: {exc.strerror}") from None
        finally:
            log_file.close()

    async def _train(
        self,
        run_id: int,
        command: list[str],
        log_path: Path,
        progress: Progress,
        on_progress: ProgressCallback | None,
    ) -> None:
        proc = await self._spawn(command, log_path)
        self._proc = proc
        error: str | None = None
        done = False
        assert proc.stdout is not None
        try:
            async for raw in proc.stdout:
                event = _train_event(raw)
                if event is None:
                    continue
                progress.apply(event)
                if event.event == EventKind.ERROR:
                    error = event.message or "training failed"
                done = done or event.event == EventKind.DONE
                forced = event.event in (EventKind.START, EventKind.DONE)
                await self._report(run_id, progress, on_progress, force=forced)
            rc = await proc.wait()
        finally:
            self._proc = None
            if proc.returncode is None:
                self._kill(proc)
        if self._stop is not None:
            raise asyncio.CancelledError()
        if rc != 0 or error or not done:
            detail = error or _last_line(log_path) or f"exit status {rc}"
            raise MicrogenreError(f"training failed: {detail}")

    async def _evaluate(self, adapter: str | None, dataset: Path, log_path: Path) -> EvalResult:
        command = list(self.eval_command)
        if adapter is not None:
            command += ["--adapter", adapter]
        if await asyncio.to_thread(dataset.is_dir):
            command += ["--dataset", str(dataset)]
        command.append("--json")
        proc = await self._spawn(command, log_path)
        self._proc = proc
        try:
            assert proc.stdout is not None
            out = await proc.stdout.read()
            rc = await proc.wait()
        finally:
            self._proc = None
        if self._stop is not None:
            raise asyncio.CancelledError()
        if rc != 0:
            detail = _last_line(log_path) or f"exit status {rc}"
            raise MicrogenreError(f"evaluation failed: {detail}")
        text = out.decode("utf-8", "replace")
        try:
            # Tolerate log lines before the JSON document.
            return EvalResult.from_json(text[text.find("{") :])
        except ValueError:
            raise MicrogenreError("evaluation failed: it did not print an evaluation") from None

    _last_report: float = 0.0

    async def _report(
        self,
        run_id: int,
        progress: Progress,
        on_progress: ProgressCallback | None,
        *,
        force: bool = False,
    ) -> None:
        now = time.monotonic()
        if not force and now - self._last_report < self.config.bot.progress_edit_interval_s:
            return
        self._last_report = now
        await runs_store.update_run(
            self.sessions,
            run_id,
            progress=progress.fraction,
            step=progress.step,
            total_steps=progress.total_steps,
            loss=progress.loss,
        )
        if on_progress is not None:
            try:
                await on_progress(progress)
            except Exception:
                log.warning("progress report of run %s failed", run_id, exc_info=True)


async def _call(callback: Callable[[Any], Awaitable[None]], value: Any) -> None:
    """Run a progress or finish callback; a failing one is logged, never raised."""
    try:
        await callback(value)
    except Exception:
        log.warning("a retraining callback failed", exc_info=True)


def _result(outcome: RunOutcome) -> dict[str, Any]:
    return {
        "reason": outcome.reason,
        "metrics": outcome.metrics,
        "baseline": outcome.baseline,
        "adapter": outcome.adapter,
    }


def discard_outputs(adapter_dir: Path, dataset_dir: Path) -> None:
    """Delete an unfinished run's adapter folder, its work/temporary siblings and dataset.

    Blocking: call it in a thread.
    """
    for folder in (
        adapter_dir,
        adapter_dir.with_name(adapter_dir.name + ".work"),
        adapter_dir.with_name(adapter_dir.name + ".tmp"),
        dataset_dir,
    ):
        shutil.rmtree(folder, ignore_errors=True)


def _train_event(raw: bytes) -> TrainEvent | None:
    """The event on a line of ``microgenre train --progress-json``; None for anything else."""
    line = raw.decode("utf-8", "replace").strip()
    if not line.startswith("{"):
        return None
    try:
        return TrainEvent.from_json(line)
    except (ValueError, TypeError):
        return None


def _stored_evaluation(metrics: dict[str, Any]) -> EvalResult | None:
    """The evaluation stored with a model version (see ``_train_and_gate``), if it has one."""
    try:
        return EvalResult.from_dict(metrics["evaluation"])
    except (KeyError, TypeError, ValueError):
        return None


def _last_line(path: Path) -> str | None:
    try:
        lines = [ln.strip() for ln in path.read_text("utf-8", "replace").splitlines() if ln.strip()]
    except OSError:
        return None
    if not lines:
        return None
    last = lines[-1].removeprefix("Error: ")
    return last[:300]
