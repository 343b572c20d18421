"""Retraining phases as a state machine (CONVENTIONS 19): random sequences of runs of two
servers, each stopped by a cancel, a SIGTERM-style shutdown or a crash at a random phase
(queued, training, evaluating, activating) or left to finish, with the fake train/eval scripts.

A crash is the process vanishing: its child is killed with SIGKILL and from that moment the
manager can no longer reach the database (so none of its clean-up runs), and its lease is held
by a process id that no longer exists; a new service and manager then start over the same
store and recover, as a restarted bot would. A shutdown is followed by the same restart.

After every step: what the database says each server uses is what the service resolves for
it (the AdapterRef of its requests) and what a reference model of the steps expects; every
version's folder exists; no run is left running; and while a run trains, exactly one run holds
the lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.retrain import Progress, RetrainManager, version_name
from bot.retrain.queue import holder_id
from bot.service import GenreService
from bot.store import runs as runs_store
from bot.store import schema
from bot.store import versions as versions_store
from bot.store.engine import create_engine, create_sessionmaker
from model.protocol import AdapterRef
from tests.bot.fakes import ScriptedGenerator, make_config
from tests.bot.test_server_models import generate_for, scripts

pytestmark = pytest.mark.timeout(120)

A, B = 111, 222
PHASES = ["queued", "training", "evaluating", "activating", "done"]
# "cancel+shutdown": an admin's cancel, then SIGTERM at once (the shutdown must return cleanly
# and free the training slot, whatever the run's task was doing).
STOPS = ["cancel", "shutdown", "crash", "cancel+shutdown"]


@dataclass(frozen=True)
class Step:
    guild: int
    phase: str  # where the stop comes ("done": no stop, the run finishes)
    how: str


steps = st.lists(
    st.builds(Step, st.sampled_from([A, B]), st.sampled_from(PHASES), st.sampled_from(STOPS)),
    min_size=1,
    max_size=3,
)


class Severable:
    """The sessionmaker of a process that can die: once cut, every use fails, as it would
    for a process that no longer exists (none of its clean-up reaches the database)."""

    def __init__(self, sessions: Any) -> None:
        self.sessions = sessions
        self.cut = False

    def begin(self) -> Any:
        if self.cut:
            raise ConnectionError("the process crashed")
        return self.sessions.begin()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.cut:
            raise ConnectionError("the process crashed")
        return self.sessions(*args, **kwargs)

    @property
    def kw(self) -> Any:
        return self.sessions.kw


def dead_holder() -> str:
    """A lease holder id of this machine whose process has exited."""
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return holder_id(int(child.stdout.strip()))


class Process:
    """One bot process: its generator, service and retraining manager over the store."""

    def __init__(self, sessions: Any, root: Path) -> None:
        self.gen = ScriptedGenerator()
        self.db = Severable(sessions)
        self.service = GenreService(self.gen, sessions, model_cache_s=0.0)
        self.manager = RetrainManager(
            make_config(root),
            self.db,  # type: ignore[arg-type]
            self.service,
            lease_s=3.0,
            poll_s=0.1,
            **scripts(delay=0.05, eval_delay=0.1),
        )
        self.manager.holder = dead_holder()  # only matters once it has crashed
        self.reached: dict[str, asyncio.Event] = {p: asyncio.Event() for p in PHASES}
        prepare = self.gen.prepare

        async def slow_prepare(adapter: AdapterRef) -> None:
            self.reached["activating"].set()
            await asyncio.sleep(0.2)
            await prepare(adapter)

        self.gen.prepare = slow_prepare  # type: ignore[method-assign]

    async def on_progress(self, progress: Progress) -> None:
        if progress.phase in self.reached:
            self.reached[progress.phase].set()

    async def start(self, guild: int) -> int:
        for event in self.reached.values():
            event.clear()
        run = await self.manager.start(
            requested_by=1, guild_id=guild, channel_id=1, on_progress=self.on_progress
        )
        return run.run_id

    async def crash(self) -> None:
        manager = self.manager
        self.db.cut = True
        manager.closing = True  # a dead process takes nothing from the queue
        proc = manager.control.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        for task in (manager._poller, manager.control.task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task


async def settle(process: Process, sessions: Any) -> None:
    """Wait until no run of either server is queued or running."""
    for _ in range(400):
        await process.manager.wait()
        if all([await runs_store.active_run(sessions, g) is None for g in (A, B)]):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the queue never drained")


async def check_agreement(process: Process, sessions: Any, expected: dict[int, str | None]) -> None:
    for guild in (A, B):
        active = await versions_store.serving_version(sessions, guild)
        ref, _ = await generate_for(process.service, process.gen, guild)
        assert (active.name if active else None) == expected[guild]
        assert ref == (None if active is None else AdapterRef(active.name, active.path))
    for version in await versions_store.list_versions(sessions):
        assert await asyncio.to_thread(Path(version.path).is_dir), version
    assert await runs_store.runs_by_status(sessions, "running") == []


async def one_holder(sessions: Any) -> None:
    """While a run trains: it is the only running run and the lease names it."""
    running = await runs_store.runs_by_status(sessions, "running")
    assert len(running) == 1
    async with sessions.begin() as session:
        from bot.store.models import RetrainLease

        lease = await session.get(RetrainLease, runs_store.LEASE_ROW)
        assert lease is not None and lease.run_id == running[0].id


async def play(steps_: list[Step], root: Path) -> None:
    url = f"sqlite+aiosqlite:///{root / 'store.db'}"
    await asyncio.to_thread(schema.upgrade, url, "head")
    engine = create_engine(url)
    sessions = create_sessionmaker(engine)
    expected: dict[int, str | None] = {A: None, B: None}
    process = Process(sessions, root)
    try:
        for step in steps_:
            process = await play_step(process, step, sessions, root, expected)
            await settle(process, sessions)
            await check_agreement(process, sessions, expected)
    finally:
        await process.manager.shutdown()
        await engine.dispose()


async def play_step(
    process: Process, step: Step, sessions: Any, root: Path, expected: dict[int, str | None]
) -> Process:
    guild, other = step.guild, (B if step.guild == A else A)
    if step.phase == "queued":
        other_run = await process.start(other)  # holds the slot
        run = await process.start(guild)
        assert await runs_store.queue_position(sessions, run) == 1
        await process.reached["training"].wait()
        await one_holder(sessions)
        if step.how == "cancel":
            await process.manager.cancel(guild, "stop")
            expected[other] = version_name(other_run, other)  # it trains on, and passes
        elif step.how == "cancel+shutdown":
            await process.manager.cancel(guild, "stop")  # the queued run goes; the other fails
        else:
            # The slot's holder stops too; the queued run survives and trains after restart.
            expected[guild] = version_name(run, guild)
    else:
        run = await process.start(guild)
        if step.phase == "done":
            await process.manager.wait()
            expected[guild] = version_name(run, guild)
            return process
        await process.reached[step.phase].wait()
        await one_holder(sessions)
        if step.how in ("cancel", "cancel+shutdown"):
            await process.manager.cancel(guild, "stop")
    if step.how == "cancel":
        return process
    if step.how in ("shutdown", "cancel+shutdown"):
        await process.manager.shutdown()
        holder, _ = await runs_store.lease_holder(sessions)
        assert holder is None, "shutdown left the training slot held"
    else:
        await process.crash()
    restarted = Process(sessions, root)
    await restarted.service.start()
    await restarted.manager.recover()
    return restarted


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
@given(steps)
def test_any_stop_at_any_phase_keeps_store_and_service_agreeing(steps_: list[Step]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(play(steps_, Path(tmp)))
