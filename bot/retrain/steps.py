"""A run's steps, train → evaluate → gate → activate, each with typed inputs and outputs.

- :func:`train` runs ``microgenre server-run --progress-json ...`` and follows its
  :class:`~model.events.TrainEvent` lines; its ``done`` event names the adapter and the dataset
  folder the run built (:class:`Trained`).
- :func:`evaluate` runs ``microgenre eval --json`` on the new adapter and on the server's
  current one, on that dataset's validation split (:class:`Evaluation`).
- :func:`gate` compares them (:class:`GateDecision`, see :func:`quality_gate`).
- :func:`activate` checks that the worker serves the adapter, then commits the version.

The children run in their own process group; :class:`RunControl` is how a cancel or a shutdown
reaches them. The commands are injectable (``[bot] train_command`` / ``eval_command``), so
tests run a small script instead of real training.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.errors import MicrogenreError
from bot.store import runs as runs_store
from model.events import EvalResult, EventKind, StopReason, TrainEvent

if TYPE_CHECKING:
    from bot.config import BotConfig
    from bot.service import GenreService
    from bot.store.engine import SessionMaker
    from bot.store.versions import VersionInfo

log = logging.getLogger(__name__)

# Evaluation settings of the default `microgenre eval` command line: no markovify baseline and no
# like: conditions (the gate needs neither), `[bot] gate_samples` samples per adapter.
# The gate measures raw novelty at the temperature its thresholds ([bot] retrain_min_*) were set
# for: 0.85. Generation defaults to 0.75 since, where more raw outputs are real genres (the
# shipped adapter's raw novelty 53.5 % at 0.85, 41.3 % at 0.75), though delivered ones never are.
GATE_TEMPERATURE = "0.85"


def default_eval_args(samples: int) -> list[str]:
    """The arguments of the default evaluation command after ``eval``.

    >>> default_eval_args(300)
    ['--no-baseline', '--likes', '0', '-n', '300', '--temperature', '0.85']
    """
    return ["--no-baseline", "--likes", "0", "-n", str(samples), "--temperature", GATE_TEMPERATURE]


GATE_METRICS = ("well_formed", "novel")
# Not passed on to the training and evaluation processes, which never talk to Discord.
SECRET_VARIABLES = frozenset({"DISCORD_TOKEN", "MICROGENRE_DISCORD_TOKEN"})
# Seconds a child has to exit after SIGTERM before it is killed.
KILL_AFTER_S = 5.0


def default_command(subcommand: str, config_file: str | None = None) -> list[str]:
    """``microgenre [--config FILE] <subcommand>`` run by this Python interpreter.

    >>> default_command("server-run", "/etc/mg.toml")[2:]
    ['bot', '--config', '/etc/mg.toml', 'server-run']
    """
    config = ["--config", config_file] if config_file else []
    return [sys.executable, "-m", "bot", *config, subcommand]


def default_eval(config_file: str | None, bot: BotConfig) -> list[str]:
    """The evaluation command a run starts when ``[bot] eval_command`` is empty."""
    return [*default_command("eval", config_file), *default_eval_args(bot.gate_samples)]


def child_environment() -> dict[str, str]:
    """The bot's environment for training/evaluation processes, without the Discord token."""
    return {k: v for k, v in os.environ.items() if k not in SECRET_VARIABLES}


class RunControl:
    """How a cancel or a shutdown reaches a run: its child process, why it stops, and
    whether its version is committed (from then on nothing may stop or undo it)."""

    def __init__(self) -> None:
        self.stop: tuple[StopReason, str] | None = None
        self.committed = False
        self.activating = False
        self.proc: asyncio.subprocess.Process | None = None
        self.task: asyncio.Task[Any] | None = None

    def request_stop(self, reason: StopReason, message: str) -> bool:
        """Stop the run unless it has committed or is stopping already; whether it will."""
        if self.committed or self.stop is not None:
            return False
        self.stop = (reason, message)
        self.terminate()
        return True

    def check(self) -> None:
        """Raise :class:`asyncio.CancelledError` once a stop was requested."""
        if self.stop is not None:
            raise asyncio.CancelledError()

    def terminate(self) -> None:
        proc = self.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            asyncio.get_running_loop().call_later(KILL_AFTER_S, kill, proc)
        elif self.task is not None and not self.task.done() and not self.activating:
            # (While activating, the run checks ``stop`` itself before it commits.)
            self.task.cancel()

    async def spawn(self, command: list[str], log_path: Path) -> asyncio.subprocess.Process:
        """Start a child (stdout piped, stderr to ``log_path``) as the run's current one."""
        log_file = await asyncio.to_thread(log_path.open, "ab")
        try:
            self.proc = await asyncio.create_subprocess_exec(
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
        return self.proc


def kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


# ---------------------------------------------------------------------------- train


@dataclass(frozen=True)
class Trained:
    """What the train step made: the adapter, and the dataset folder it was trained from."""

    adapter: Path
    dataset: Path | None


async def train(
    control: RunControl,
    command: list[str],
    log_path: Path,
    on_event: Callable[[TrainEvent], Awaitable[None]],
) -> Trained:
    """Run the training command to its ``done`` event; raise with the reason otherwise."""
    proc = await control.spawn(command, log_path)
    error: str | None = None
    done: TrainEvent | None = None
    assert proc.stdout is not None
    try:
        async for raw in proc.stdout:
            event = train_event(raw)
            if event is None:
                continue
            if event.event == EventKind.ERROR:
                error = event.message or "training failed"
            if event.event == EventKind.DONE:
                done = event
            await on_event(event)
        rc = await proc.wait()
    finally:
        control.proc = None
        kill(proc)
    control.check()
    if rc != 0 or error or done is None or not done.output:
        detail = error or last_line(log_path) or f"exit status {rc}"
        raise MicrogenreError(f"training failed: {detail}")
    return Trained(Path(done.output), Path(done.dataset) if done.dataset else None)


def train_event(raw: bytes) -> TrainEvent | None:
    """The event on a line of ``--progress-json`` output; None for anything else."""
    line = raw.decode("utf-8", "replace").strip()
    if not line.startswith("{"):
        return None
    try:
        return TrainEvent.from_json(line)
    except (ValueError, TypeError):
        return None


# ---------------------------------------------------------------------------- evaluate


@dataclass(frozen=True)
class Evaluation:
    """The new adapter's evaluation and the current model's (None: it has none)."""

    new: EvalResult
    baseline: EvalResult | None


async def evaluate(
    control: RunControl,
    eval_command: Sequence[str],
    trained: Trained,
    current: VersionInfo | None,
    run_dir: Path,
) -> Evaluation:
    """Evaluate both adapters on the run's dataset, so that they compare fairly. When the
    current one cannot be evaluated now, its stored evaluation stands in."""
    new = await _evaluate_one(
        control, eval_command, str(trained.adapter), trained.dataset, run_dir / "eval.log"
    )
    baseline: EvalResult | None
    try:
        baseline = await _evaluate_one(
            control,
            eval_command,
            current.path if current is not None else None,
            trained.dataset,
            run_dir / "eval-active.log",
        )
    except MicrogenreError as exc:
        log.warning("evaluating the active model failed (%s); using its stored numbers", exc)
        baseline = stored_evaluation(current.metrics if current is not None else {})
    return Evaluation(new, baseline)


async def _evaluate_one(
    control: RunControl,
    eval_command: Sequence[str],
    adapter: str | None,
    dataset: Path | None,
    log_path: Path,
) -> EvalResult:
    command = list(eval_command)
    if adapter is not None:
        command += ["--adapter", adapter]
    if dataset is not None and await asyncio.to_thread(dataset.is_dir):
        command += ["--dataset", str(dataset)]
    command.append("--json")
    proc = await control.spawn(command, log_path)
    try:
        assert proc.stdout is not None
        out = await proc.stdout.read()
        rc = await proc.wait()
    finally:
        control.proc = None
    control.check()
    if rc != 0:
        detail = last_line(log_path) or f"exit status {rc}"
        raise MicrogenreError(f"evaluation failed: {detail}")
    text = out.decode("utf-8", "replace")
    try:
        # Tolerate log lines before the JSON document.
        return EvalResult.from_json(text[text.find("{") :])
    except ValueError:
        raise MicrogenreError("evaluation failed: it did not print an evaluation") from None


def stored_evaluation(metrics: dict[str, Any]) -> EvalResult | None:
    """The evaluation stored with a model version (see :func:`activate`), if it has one."""
    try:
        return EvalResult.from_dict(metrics["evaluation"])
    except (KeyError, TypeError, ValueError):
        return None


# ---------------------------------------------------------------------------- gate


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reasons: list[str]
    metrics: dict[str, float]
    baseline: dict[str, float]


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


def gate(evaluation: Evaluation, bounds: BotConfig) -> GateDecision:
    new = gate_metrics(evaluation.new)
    old = gate_metrics(evaluation.baseline) if evaluation.baseline is not None else {}
    passed, reasons = quality_gate(new, old or None, bounds)
    return GateDecision(passed, reasons, new, old)


# ---------------------------------------------------------------------------- activate


@dataclass(frozen=True)
class Activation:
    """What :func:`activate` commits: the run, its version's name and folder, its numbers."""

    run_id: int
    guild_id: int | None
    name: str
    adapter: Path
    base_model: str
    metrics: dict[str, Any]
    result: dict[str, Any]
    # The lease holder running the run: only it may commit (see ``finish_activated``).
    holder: str


async def activate(
    control: RunControl, sessions: SessionMaker, service: GenreService, activation: Activation
) -> None:
    """Check that the worker serves the adapter, then commit the version and the run's success
    in one transaction, then tell the service. A stop before the commit leaves the server on
    its current model; nothing stops the run after it. Raises :class:`MicrogenreError` when
    the worker rejects the adapter, and
    :class:`~bot.store.runs.ActivationRefusedError` when the store refuses the commit (a
    cancel from any process, or a lost lease)."""
    from model.protocol import AdapterRef

    ref = AdapterRef(activation.name, str(activation.adapter))
    try:
        await service.prepare(ref)
    except Exception as exc:
        raise MicrogenreError(f"the worker rejected the new adapter: {exc}") from exc
    control.check()
    version = await runs_store.finish_activated(
        sessions,
        activation.run_id,
        holder=activation.holder,
        name=ref.name,
        path=ref.path,
        base_model=activation.base_model,
        metrics=activation.metrics,
        guild_id=activation.guild_id,
        result=activation.result,
    )
    control.committed = True
    await service.announce_model_change(activation.guild_id)
    log.info("server %s now uses %s", activation.guild_id, version.name)


def last_line(path: Path) -> str | None:
    """The last non-empty line of a child's log (its error, usually), at most 300 chars."""
    try:
        lines = [ln.strip() for ln in path.read_text("utf-8", "replace").splitlines() if ln.strip()]
    except OSError:
        return None
    if not lines:
        return None
    return lines[-1].removeprefix("Error: ")[:300]
