"""One run, walked as its steps: votes file → train → evaluate → gate → activate → finish.

:func:`execute` is the walk. Every write to the run's row goes through its
:class:`~bot.retrain.progress.RunRecord`. A cancelled or failed run deletes what it left
half-made (adapter folder, checkpoints in ``<adapter>.work``, its dataset) unless a model
version points to it; its logs stay in the run folder. A rejected adapter is kept for
inspection. The database is the truth: a run whose version was committed has succeeded,
whatever interrupted it afterwards.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import bot.retrain.steps as steps
from bot.errors import MicrogenreError
from bot.retrain.data import VOTES_FILE, server_run_command, write_votes_file
from bot.retrain.progress import LOSS_CURVE, RunOutcome, RunRecord, render_loss_curve
from bot.store import runs as runs_store
from bot.store import versions as versions_store
from bot.store.models import RUN_CANCELLED, RUN_FAILED, RUN_REJECTED, RUN_SUCCEEDED
from model.events import StopReason

if TYPE_CHECKING:
    from bot.config import Config
    from bot.service import GenreService
    from bot.store.engine import SessionMaker

log = logging.getLogger(__name__)

TRAIN_LOG = "train.log"
# The status of a run stopped from the bot (an admin's cancel, or the bot shutting down).
STOPPED_STATUS = {StopReason.CANCELLED: RUN_CANCELLED, StopReason.SHUT_DOWN: RUN_FAILED}


def version_name(run_id: int, guild_id: int | None) -> str:
    """The served name of a run's adapter.

    >>> version_name(7, 123), version_name(7, None)
    ('guild-123-run-0007', 'run-0007')
    """
    return f"run-{run_id:04d}" if guild_id is None else f"guild-{guild_id}-run-{run_id:04d}"


@dataclass(frozen=True)
class RunPlan:
    """Where a run works and what it runs: everything :func:`execute` needs besides state."""

    config: Config
    sessions: SessionMaker
    service: GenreService
    train_command: list[str]
    eval_command: list[str]

    def run_dir(self, run_id: int) -> Path:
        return self.config.data_dir / "runs" / f"run-{run_id:04d}"

    def adapter_dir(self, run_id: int) -> Path:
        return self.config.data_dir / "adapters" / f"run-{run_id:04d}"


async def execute(
    plan: RunPlan, info: runs_store.RunInfo, control: steps.RunControl, record: RunRecord
) -> RunOutcome:
    """Walk a run's steps and record how it ended; never raises for the run's own errors."""
    run_id = info.id
    try:
        outcome = await _walk(plan, info, control, record)
    except asyncio.CancelledError:
        outcome = RunOutcome(run_id, RUN_CANCELLED, "cancelled")
    except MicrogenreError as exc:
        outcome = RunOutcome(run_id, RUN_FAILED, str(exc))
    except Exception as exc:
        log.exception("retraining run %s failed unexpectedly", run_id)
        outcome = RunOutcome(run_id, RUN_FAILED, f"unexpected error: {exc}")
    if control.stop is not None and outcome.status not in (RUN_SUCCEEDED, RUN_REJECTED):
        stop_reason, outcome.reason = control.stop
        outcome.status = STOPPED_STATUS[stop_reason]
    committed = await versions_store.find_version(
        plan.sessions, version_name(run_id, info.guild_id)
    )
    if committed is not None and outcome.status != RUN_SUCCEEDED:
        outcome.status, outcome.reason = RUN_SUCCEEDED, f"activated as {committed.name}"
        outcome.adapter = committed.path
        await plan.service.announce_model_change(info.guild_id)
    if outcome.status in (RUN_CANCELLED, RUN_FAILED) and outcome.adapter is None:
        # Nothing was evaluated or registered: the half-trained adapter, its checkpoints
        # and its dataset are of no use (the logs in the run folder stay).
        await discard(plan, run_id, record.dataset)
    progress = record.progress
    if outcome.loss_curve is None and progress.losses:
        run_dir = plan.run_dir(run_id)
        run_dir.mkdir(parents=True, exist_ok=True)
        outcome.loss_curve = await asyncio.to_thread(
            render_loss_curve, progress.losses, run_dir / LOSS_CURVE
        )
    await record.finish(outcome)
    return outcome


async def _walk(
    plan: RunPlan, info: runs_store.RunInfo, control: steps.RunControl, record: RunRecord
) -> RunOutcome:
    run_id, guild_id = info.id, info.guild_id
    run_dir = plan.run_dir(run_id)
    # The server's current model: where the run starts from, and the gate's baseline.
    current = await versions_store.serving_version(plan.sessions, guild_id)
    # The server's 👍/👎 (net score > 0: more like this, < 0: less), see bot.retrain.data.
    votes_file = run_dir / VOTES_FILE
    counts = await write_votes_file(plan.sessions, guild_id, votes_file)
    await record.training(counts.total)
    command = server_run_command(
        plan.train_command,
        output=plan.adapter_dir(run_id),
        votes_file=votes_file,
        from_adapter=current.path if current is not None else None,
    )
    trained = await steps.train(control, command, run_dir / TRAIN_LOG, record.event)

    await record.phase("evaluating")
    evaluation = await steps.evaluate(control, plan.eval_command, trained, current, run_dir)
    decision = steps.gate(evaluation, plan.config.bot)
    curve = trained.adapter / LOSS_CURVE
    outcome = RunOutcome(
        run_id,
        RUN_REJECTED,
        "; ".join(decision.reasons),
        metrics=decision.metrics,
        baseline=decision.baseline,
        adapter=str(trained.adapter),
        loss_curve=curve if curve.is_file() else None,
    )
    if not decision.passed:
        return outcome

    await record.phase("activating")
    control.activating = True
    name = version_name(run_id, guild_id)
    outcome.status, outcome.reason = RUN_SUCCEEDED, f"activated as {name}"
    activation = steps.Activation(
        run_id,
        guild_id,
        name,
        trained.adapter,
        plan.config.model.base_model,
        {**decision.metrics, "evaluation": evaluation.new.to_dict()},
        outcome.result(),
        info.holder or "",
    )
    try:
        await steps.activate(control, plan.sessions, plan.service, activation)
    except runs_store.ActivationRefusedError as exc:
        # Cancelled, or no longer this process's run: it ends like any stopped run, its
        # adapter deleted (a process that found the run orphaned may have deleted it already).
        outcome.status, outcome.reason, outcome.adapter = exc.status, str(exc), None
        # The loss curve was in that folder: execute() draws it again in the run folder.
        outcome.loss_curve = None
    except MicrogenreError as exc:
        # The adapter stays for inspection, like a rejected one.
        outcome.status, outcome.reason = RUN_FAILED, str(exc)
    return outcome


async def discard(plan: RunPlan, run_id: int, dataset: Path | None) -> None:
    """Delete a run's half-made outputs (and the dataset its training reported), except what
    a model version points to (see :func:`discard_outputs`)."""
    referenced = await versions_store.referenced_paths(plan.sessions)
    await asyncio.to_thread(
        discard_outputs, plan.adapter_dir(run_id), dataset, [Path(p) for p in referenced]
    )


def discard_outputs(
    adapter_dir: Path, dataset_dir: Path | None, referenced: Sequence[Path] = ()
) -> list[Path]:
    """Delete an unfinished run's adapter folder, its work/temporary siblings and dataset;
    the folders deleted.

    A folder that is, contains or lies inside a ``referenced`` path (a model version's) stays,
    whatever the spelling: paths are compared resolved (links, ``..``, trailing slashes).
    Blocking: call it in a thread.
    """
    kept = [p.resolve() for p in referenced]
    deleted: list[Path] = []
    for folder in (
        adapter_dir,
        adapter_dir.with_name(adapter_dir.name + ".work"),
        adapter_dir.with_name(adapter_dir.name + ".tmp"),
        *([dataset_dir] if dataset_dir is not None else []),
    ):
        target = folder.resolve()
        if any(k == target or target in k.parents or k in target.parents for k in kept):
            log.warning("kept %s: a model version points to it", folder)
            continue
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
            deleted.append(folder)
    return deleted
