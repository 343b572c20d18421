"""Retraining from Discord: one run at a time, in its own process, behind a quality gate.

A run (:class:`RetrainManager`):

1. writes the community genres (net score >= ``[bot] retrain_min_score``, fewer than
   ``retrain_max_downvotes`` downvotes) to ``<data>/runs/run-NNNN/community_genres.txt``;
2. runs ``microgenre train --progress-json --output DIR --extra-genres FILE`` as a subprocess
   and follows its :class:`~model.events.TrainEvent` lines, reporting progress to a callback at
   most every ``progress_edit_interval_s``;
3. evaluates the new adapter and the active one on the run's validation split with
   ``microgenre eval --adapter DIR --dataset DIR --json``, which prints an
   :class:`~model.events.EvalResult` (the active model's stored evaluation is the fall-back when
   it cannot be evaluated);
4. activates the new adapter (a ``ModelVersion`` row made active, then a hot reload of the
   worker) only if it passes :func:`quality_gate`; otherwise the active model keeps serving.

A cancelled or failed run deletes what it left half-made (adapter folder, checkpoints in
``<adapter>.work``, its dataset); its logs stay in the run folder. A rejected adapter is kept
for inspection.

The commands are injectable (``[bot] train_command`` / ``eval_command``), so tests run a small
script instead of real training. A run interrupted by a restart is marked failed at start-up
(:meth:`RetrainManager.recover`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.errors import MicrogenreError
from bot.store import runs as runs_store
from bot.store.leaderboard import community_genres
from bot.store.models import (
    RUN_CANCELLED,
    RUN_FAILED,
    RUN_REJECTED,
    RUN_RUNNING,
    RUN_SUCCEEDED,
)
from bot.text import format_duration
from model.events import EvalResult, EventKind, StopReason, TrainEvent

if TYPE_CHECKING:
    from bot.config import BotConfig, Config
    from bot.service import GenreService
    from bot.store.engine import SessionMaker

log = logging.getLogger(__name__)

COMMUNITY_FILE = "community_genres.txt"
TRAIN_LOG = "train.log"
EVAL_LOG = "eval.log"
EVAL_ACTIVE_LOG = "eval-active.log"
# Evaluation settings of the default `microgenre eval` command line: no markovify baseline and no
# like: conditions (the gate needs neither), 300 samples per adapter.
DEFAULT_EVAL_ARGS = ("--no-baseline", "--likes", "0", "-n", "300")
LOSS_CURVE = "loss_curve.png"
GATE_METRICS = ("well_formed", "novel")
# Not passed on to the training and evaluation processes, which never talk to Discord.
SECRET_VARIABLES = frozenset({"DISCORD_TOKEN", "MICROGENRE_DISCORD_TOKEN"})
# The status of a run stopped from the bot (an admin's cancel, or the bot shutting down).
STOPPED_STATUS = {StopReason.CANCELLED: RUN_CANCELLED, StopReason.SHUT_DOWN: RUN_FAILED}


class RetrainBusyError(MicrogenreError):
    """A run is already in progress; the message says how far it is."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        super().__init__(f"A retraining run is already in progress: {progress.summary()}")


class NoRunError(MicrogenreError):
    def __init__(self) -> None:
        super().__init__("No retraining run is in progress.")


@dataclass
class Progress:
    """What the progress message shows."""

    run_id: int
    status: str = "pending"
    phase: str = "starting"  # starting, training, evaluating, activating, finished
    step: int = 0
    total_steps: int = 0
    epoch: int | None = None
    loss: float | None = None
    eta_s: float | None = None
    community_genres: int = 0
    losses: list[tuple[int, float]] = field(default_factory=list)

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
        """One line, e.g. ``run #3 training, step 40/100, loss 1.234, about 2m left``."""
        parts = [f"run #{self.run_id} {self.phase}"]
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


class RetrainManager:
    """Runs retraining jobs one at a time (see the module docstring)."""

    def __init__(
        self,
        config: Config,
        sessions: SessionMaker,
        service: GenreService,
        *,
        train_command: Sequence[str] | None = None,
        eval_command: Sequence[str] | None = None,
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
        self.progress: Progress | None = None
        self._task: asyncio.Task[RunOutcome] | None = None
        self._proc: asyncio.subprocess.Process | None = None
        # Why the bot stopped the current run, and the message recorded with it.
        self._stop: tuple[StopReason, str] | None = None
        self._lock = asyncio.Lock()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def recover(self) -> list[int]:
        """Mark runs left pending/running by a previous process as failed."""
        ids = await runs_store.fail_interrupted_runs(
            self.sessions, "interrupted: the bot restarted while it was running"
        )
        if ids:
            log.warning("marked interrupted training runs as failed: %s", ids)
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
        """Start a run in the background; raises :class:`RetrainBusyError` when one runs."""
        async with self._lock:
            if self.running and self.progress is not None:
                raise RetrainBusyError(self.progress)
            selected = await community_genres(
                self.sessions,
                min_score=self.config.bot.retrain_min_score,
                max_downvotes=self.config.bot.retrain_max_downvotes,
            )
            info = await runs_store.create_run(
                self.sessions,
                requested_by=requested_by,
                guild_id=guild_id,
                channel_id=channel_id,
                options={"community_genres": len(selected)},
            )
            if info is None:  # another process holds a run
                active = await runs_store.active_run(self.sessions)
                progress = Progress(active.id if active else 0, phase="running elsewhere")
                raise RetrainBusyError(progress)
            self.progress = Progress(info.id, community_genres=len(selected))
            self._stop = None
            self._task = asyncio.get_running_loop().create_task(
                self._run(info.id, [name for name, _ in selected], on_progress, on_finish),
                name=f"retrain-{info.id}",
            )
            return self.progress

    async def wait(self) -> RunOutcome | None:
        """Wait for the current run (tests, shutdown)."""
        if self._task is None:
            return None
        return await asyncio.shield(self._task)

    async def cancel(self, reason: str = "cancelled by an admin") -> Progress:
        if not self.running or self.progress is None:
            raise NoRunError()
        self._stop = (StopReason.CANCELLED, reason)
        self._terminate()
        return self.progress

    async def shutdown(self) -> None:
        """Stop a run because the bot stops; it is recorded as failed."""
        if self.running:
            self._stop = (StopReason.SHUT_DOWN, "the bot shut down during the run")
            self._terminate()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._task), 15)  # type: ignore[arg-type]

    def _terminate(self) -> None:
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            asyncio.get_running_loop().call_later(5, self._kill, proc)
        elif self._task is not None and not self._task.done():
            self._task.cancel()

    @staticmethod
    def _kill(proc: asyncio.subprocess.Process) -> None:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

    # ------------------------------------------------------------------ the run

    async def _run(
        self,
        run_id: int,
        community: list[str],
        on_progress: ProgressCallback | None,
        on_finish: FinishCallback | None,
    ) -> RunOutcome:
        progress = self.progress
        assert progress is not None
        run_dir = self.config.data_dir / "runs" / f"run-{run_id:04d}"
        adapter_dir = self.config.data_dir / "adapters" / f"run-{run_id:04d}"
        try:
            outcome = await self._train_and_gate(
                run_id, run_dir, adapter_dir, community, progress, on_progress
            )
        except asyncio.CancelledError:
            outcome = RunOutcome(run_id, RUN_CANCELLED, "cancelled")
        except MicrogenreError as exc:
            outcome = RunOutcome(run_id, RUN_FAILED, str(exc))
        except Exception as exc:
            log.exception("retraining run %s failed unexpectedly", run_id)
            outcome = RunOutcome(run_id, RUN_FAILED, f"unexpected error: {exc}")
        if self._stop is not None and outcome.status not in (RUN_SUCCEEDED, RUN_REJECTED):
            stop_reason, outcome.reason = self._stop
            outcome.status = STOPPED_STATUS[stop_reason]
        if outcome.status in (RUN_CANCELLED, RUN_FAILED) and outcome.adapter is None:
            # Nothing was evaluated or registered: the half-trained adapter, its checkpoints
            # and its dataset are of no use (the logs in the run folder stay).
            await asyncio.to_thread(
                discard_outputs, adapter_dir, self.config.data_dir / "datasets" / adapter_dir.name
            )
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
            result={
                "reason": outcome.reason,
                "metrics": outcome.metrics,
                "baseline": outcome.baseline,
                "adapter": outcome.adapter,
            },
            progress=progress.fraction,
            step=progress.step,
            total_steps=progress.total_steps,
            loss=progress.loss,
        )
        log.info("retraining run %s %s: %s", run_id, outcome.status, outcome.reason)
        if on_finish is not None:
            try:
                await on_finish(outcome)
            except Exception:
                log.exception("reporting the end of run %s failed", run_id)
        return outcome

    async def _train_and_gate(
        self,
        run_id: int,
        run_dir: Path,
        adapter_dir: Path,
        community: list[str],
        progress: Progress,
        on_progress: ProgressCallback | None,
    ) -> RunOutcome:
        extra_file = run_dir / COMMUNITY_FILE
        await asyncio.to_thread(_write_lines, extra_file, community)
        await runs_store.update_run(self.sessions, run_id, status=RUN_RUNNING)
        progress.status = RUN_RUNNING
        progress.phase = "training"
        command = [*self.train_command, "--progress-json", "--output", str(adapter_dir)]
        if community:
            command += ["--extra-genres", str(extra_file)]
        await self._train(run_id, command, run_dir / TRAIN_LOG, progress, on_progress)

        progress.phase = "evaluating"
        await self._report(run_id, progress, on_progress, force=True)
        # Both adapters are evaluated on the validation split of this run's dataset (built by
        # `microgenre train` in <data>/datasets/<adapter folder name>), so they compare fairly.
        dataset = self.config.data_dir / "datasets" / adapter_dir.name
        evaluation = await self._evaluate(str(adapter_dir), dataset, run_dir / EVAL_LOG)
        active = await runs_store.active_version(self.sessions)
        baseline: EvalResult | None
        try:
            baseline = await self._evaluate(
                active.path if active is not None else None, dataset, run_dir / EVAL_ACTIVE_LOG
            )
        except MicrogenreError as exc:
            # The active adapter could not be evaluated now: fall back to its stored evaluation.
            log.warning("evaluating the active model failed (%s); using its stored numbers", exc)
            baseline = _stored_evaluation(active.metrics if active is not None else {})
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

        progress.phase = "activating"
        await self._report(run_id, progress, on_progress, force=True)
        version = await runs_store.add_version(
            self.sessions,
            name=f"run-{run_id:04d}",
            path=str(adapter_dir),
            base_model=self.config.model.base_model,
            metrics={**new, "evaluation": evaluation.to_dict()},
            activate=True,
        )
        try:
            await self.service.reload(str(adapter_dir), version=(version.id, version.name))
        except Exception as exc:
            await runs_store.set_active_version(self.sessions, active.id if active else None)
            outcome.status = RUN_FAILED
            outcome.reason = f"the worker rejected the new adapter: {exc}"
            return outcome
        await runs_store.update_run(self.sessions, run_id, model_version_id=version.id)
        outcome.status = RUN_SUCCEEDED
        outcome.reason = f"activated as {version.name}"
        return outcome

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


def _write_lines(path: Path, lines: Sequence[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def _last_line(path: Path) -> str | None:
    try:
        lines = [ln.strip() for ln in path.read_text("utf-8", "replace").splitlines() if ln.strip()]
    except OSError:
        return None
    if not lines:
        return None
    last = lines[-1].removeprefix("Error: ")
    return last[:300]
