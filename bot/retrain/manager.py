"""The retraining facade the cogs and the bot call: start, cancel, progress, shutdown.

:class:`RetrainManager` queues runs (:mod:`bot.store.runs`), takes the next one whenever this
process holds the machine's training slot (:class:`~bot.retrain.queue.LeaseQueue`), walks it
(:func:`bot.retrain.run.execute`) while a heartbeat renews the lease and listens for cancels
from any process, and hands each run's outcome to its callbacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import bot.retrain.retention as retention
import bot.retrain.run as run_
from bot.errors import MicrogenreError
from bot.retrain.progress import (
    Callbacks,
    FinishCallback,
    Progress,
    ProgressCallback,
    RunOutcome,
    RunRecord,
    call_safely,
)
from bot.retrain.queue import LeaseQueue
from bot.retrain.steps import RunControl, default_command, default_eval
from bot.store import runs as runs_store
from bot.store.models import RUN_CANCELLED, RUN_RUNNING
from bot.tasks import cancel_and_wait
from model.events import StopReason

if TYPE_CHECKING:
    from bot.config import Config
    from bot.service import GenreService
    from bot.store.engine import SessionMaker

log = logging.getLogger(__name__)

# Seconds the bot's shutdown waits for a stopped run to record how it ended.
SHUTDOWN_WAIT_S = 15.0
# Callbacks for a run queued by another process (or before a restart): the cog edits the
# run's stored message through the channel.
Notifier = Callable[[runs_store.RunInfo], Callbacks]


class NoRunError(MicrogenreError):
    def __init__(self) -> None:
        super().__init__("This server has no retraining run queued or in progress.")


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
        self.plan = run_.RunPlan(
            config,
            sessions,
            service,
            list(
                train_command or bot_cfg.train_command or default_command("server-run", config_file)
            ),
            list(eval_command or bot_cfg.eval_command or default_eval(config_file, bot_cfg)),
        )
        self.queue = LeaseQueue(sessions, lease_s)
        self.poll_s = poll_s
        self.notifier: Notifier | None = None
        # The run this process trains now: its progress and how to stop it.
        self.progress: Progress | None = None
        self.control = RunControl()
        self._lock = asyncio.Lock()
        self._poller: asyncio.Task[None] | None = None
        # The queue check scheduled when a run ends (shutdown waits for it).
        self._pump: asyncio.Task[None] | None = None
        self.closing = False

    @property
    def holder(self) -> str:
        return self.queue.holder

    @holder.setter
    def holder(self, value: str) -> None:
        self.queue.holder = value

    @property
    def train_command(self) -> list[str]:
        return self.plan.train_command

    @train_command.setter
    def train_command(self, command: Sequence[str]) -> None:
        self.plan = dataclasses.replace(self.plan, train_command=list(command))

    @property
    def running(self) -> bool:
        task = self.control.task
        return task is not None and not task.done()

    async def recover(self) -> list[int]:
        """At start-up: end the lease of a dead process of this machine, mark runs no live
        process holds as failed (their unregistered outputs are deleted), then start taking
        queued runs. Queued runs stay queued."""
        ids = await self.queue.recover()
        for run_id in ids:
            info = await runs_store.get_run(self.sessions, run_id)
            dataset = info.options.get("dataset") if info is not None else None
            await run_.discard(self.plan, run_id, Path(dataset) if dataset else None)
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
        position = await self.queue.wait_in_line(info.id, (on_progress, on_finish))
        self._ensure_poller()
        await self.pump()
        if self.progress is not None and self.progress.run_id == info.id:
            return self.progress
        return Progress(info.id, phase="queued", position=position, guild_id=guild_id)

    async def pump(self) -> None:
        """Start the oldest queued run when this machine's slot is free; tell queued runs of
        this process their new place in line."""
        async with self._lock:
            if not self.running and not self.closing:
                info = await self.queue.claim()
                if info is not None:
                    self._begin(info)
            await self.queue.tell_positions()

    def _begin(self, info: runs_store.RunInfo) -> None:
        callbacks = self.queue.take(info.id)
        if callbacks is None:
            callbacks = self.notifier(info) if self.notifier is not None else (None, None)
        on_progress, on_finish = callbacks
        progress = Progress(info.id, status=RUN_RUNNING, phase="starting", guild_id=info.guild_id)
        self.progress = progress
        self.control = RunControl()
        record = RunRecord(
            self.sessions,
            progress,
            on_progress,
            interval_s=self.config.bot.progress_edit_interval_s,
        )
        task = asyncio.get_running_loop().create_task(
            self._run(info, record, on_finish), name=f"retrain-{info.id}"
        )
        self.control.task = task
        task.add_done_callback(self._after_run)

    async def _run(
        self, info: runs_store.RunInfo, record: RunRecord, on_finish: FinishCallback | None
    ) -> RunOutcome:
        control = self.control
        heartbeat = asyncio.get_running_loop().create_task(self._heartbeat(info.id, control))
        try:
            outcome = await run_.execute(self.plan, info, control, record)
        finally:
            await cancel_and_wait(heartbeat)
        with contextlib.suppress(Exception):
            await self.queue.release()
        log.info("retraining run %s %s: %s", info.id, outcome.status, outcome.reason)
        try:
            await retention.prune(
                self.sessions,
                self.config.data_dir,
                keep_previous=self.config.bot.keep_previous_versions,
                also_keep=[self.plan.adapter_dir(info.id).name],
            )
        except Exception:
            log.warning("deleting old run folders failed", exc_info=True)
        self.service.metrics.retrain_runs.labels(outcome.status).inc()
        if on_finish is not None:
            await call_safely(on_finish, outcome)
        return outcome

    def _after_run(self, _task: asyncio.Task[RunOutcome]) -> None:
        if not self.closing:
            self._pump = asyncio.get_running_loop().create_task(self.pump(), name="retrain-pump")

    def _ensure_poller(self) -> None:
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll(), name="retrain-poll")

    async def _poll(self) -> None:
        """Take runs freed by other processes (their run ended, their lease expired)."""
        while not self.closing:
            await asyncio.sleep(self.poll_s)
            try:
                await self.pump()
            except Exception:
                log.warning("checking the retraining queue failed", exc_info=True)

    async def _heartbeat(self, run_id: int, control: RunControl) -> None:
        """Renew the lease; stop the run when a cancel arrives from any process."""
        while True:
            await asyncio.sleep(self.queue.lease_s / 3)
            try:
                reason = await self.queue.renew(run_id)
            except Exception:
                log.warning("renewing the retraining lease failed", exc_info=True)
                continue
            if reason is not None:
                lost = reason == runs_store.LEASE_LOST
                control.request_stop(StopReason.SHUT_DOWN if lost else StopReason.CANCELLED, reason)

    async def wait(self) -> RunOutcome | None:
        """Wait for the current run (tests, shutdown)."""
        task = self.control.task
        if task is None:
            return None
        return await asyncio.shield(task)

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
            self.control.request_stop(StopReason.CANCELLED, reason)
            return local
        info = await runs_store.cancel_run(self.sessions, run.id, reason)
        if info is None:
            raise NoRunError()
        if info.status == RUN_CANCELLED:  # it was queued
            _, on_finish = self.queue.take(run.id) or (None, None)
            if on_finish is not None:
                await call_safely(on_finish, RunOutcome(run.id, RUN_CANCELLED, reason))
            await self.pump()
        return Progress(run.id, status=info.status, phase=info.phase, guild_id=guild_id)

    async def shutdown(self) -> None:
        """Stop a run because the bot stops; it is recorded as failed, the queue stays."""
        self.closing = True
        # No task of the manager outlives its shutdown (or the store it uses).
        await cancel_and_wait(self._poller)
        await cancel_and_wait(self._pump)
        task = self.control.task
        try:
            if task is not None and not task.done():
                self.control.request_stop(StopReason.SHUT_DOWN, "the bot shut down during the run")
                # asyncio.wait neither raises what the task raised nor its cancellation.
                await asyncio.wait({task}, timeout=SHUTDOWN_WAIT_S)
        finally:
            with contextlib.suppress(Exception):
                await self.queue.release()
