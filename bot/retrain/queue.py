"""The machine's retraining queue: one training slot, held by a lease in the store.

The queue itself is the ``training_runs`` table (:mod:`bot.store.runs`); the slot is the single
``retrain_lease`` row. A process that holds the lease trains the oldest queued run and renews
the lease while it runs (a third of ``lease_s``); a process that stops renewing loses it, and
another takes the next run. :class:`LeaseQueue` is this process's side of that, and of the
runs it queued: their callbacks, and the place in line each last heard.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from pathlib import Path

from bot.retrain.progress import Callbacks, Progress, call_safely
from bot.store import runs as runs_store
from bot.store.engine import SessionMaker

log = logging.getLogger(__name__)


def pid_space() -> str | None:
    """Which processes' pids this process can check: its kernel's boot and its pid namespace,
    hashed (16 hex digits); None where ``/proc`` cannot tell (then no holder is judged).

    Two containers that share a hostname have different pid namespaces, so different spaces.
    """
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text("ascii").strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except (OSError, UnicodeDecodeError):
        return None
    return hashlib.sha256(f"{boot} {namespace}".encode()).hexdigest()[:16]


def process_start(pid: int) -> str | None:
    """When process ``pid`` started, in clock ticks after boot (``/proc/<pid>/stat``, field
    22); None when it is gone or cannot be read. A pid reused later has another start."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text("ascii", "replace")
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # after "pid (comm) "
    return fields[19] if len(fields) > 19 and fields[19].isdigit() else None


def holder_id(pid: int | None = None) -> str:
    """The lease holder id of process ``pid`` (default: this one), unique per call:
    ``<pid space>:<pid>:<start>:<random>`` (see :func:`holder_is_dead`)."""
    pid = os.getpid() if pid is None else pid
    return f"{pid_space() or '-'}:{pid}:{process_start(pid) or '-'}:{uuid.uuid4().hex[:8]}"


def holder_is_dead(holder: str) -> bool:
    """Whether ``holder`` (see :func:`holder_id`) was a process this one can see, that is
    gone: same pid space, and its pid is free or belongs to a process started at another
    time. A holder of another machine, container or format is never judged: its lease expires.

    >>> holder_is_dead(holder_id())
    False
    >>> holder_is_dead("elsewhere:1:abc")
    False
    """
    space, pid, started, _token = ([*holder.split(":"), "", "", ""])[:4]
    here = pid_space()
    if here is None or space != here or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return started != process_start(os.getpid())
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # someone else's process, alive
    now = process_start(int(pid))
    return started.isdigit() and now is not None and now != started


class LeaseQueue:
    """This process's side of the training slot and of the runs it queued."""

    def __init__(self, sessions: SessionMaker, lease_s: float) -> None:
        self.sessions = sessions
        self.lease_s = lease_s
        self.holder = holder_id()
        # Runs this process queued that still wait: their callbacks and last told position.
        self._waiting: dict[int, Callbacks] = {}
        self._told: dict[int, int] = {}

    async def recover(self) -> list[int]:
        """End the lease of a dead process of this machine and mark failed the runs no live
        process holds; their ids. Queued runs stay queued."""
        holder, _ = await runs_store.lease_holder(self.sessions)
        if holder is not None and holder_is_dead(holder):
            await runs_store.expire_lease(self.sessions, holder)
        return await runs_store.fail_interrupted_runs(
            self.sessions, "interrupted: the bot restarted while it was running"
        )

    async def claim(self) -> runs_store.RunInfo | None:
        """Take the slot and the oldest queued run (now running); None when busy or empty."""
        return await runs_store.claim_next(self.sessions, self.holder, self.lease_s)

    async def renew(self, run_id: int) -> str | None:
        """Extend the lease; why the run must stop (a cancel, a lost lease), else None."""
        return await runs_store.renew_lease(self.sessions, self.holder, run_id, self.lease_s)

    async def release(self) -> None:
        await runs_store.release_lease(self.sessions, self.holder)

    # ------------------------------------------------------------- runs waiting in line

    async def wait_in_line(self, run_id: int, callbacks: Callbacks) -> int | None:
        """Remember a run this process queued; its place in line now."""
        self._waiting[run_id] = callbacks
        position = await runs_store.queue_position(self.sessions, run_id)
        self._told[run_id] = position or 0
        return position

    def take(self, run_id: int) -> Callbacks | None:
        """The callbacks of a run that leaves the line (started or cancelled), if queued here."""
        self._told.pop(run_id, None)
        return self._waiting.pop(run_id, None)

    async def tell_positions(self) -> None:
        """Tell each run waiting here its new place in line, when it changed."""
        for run_id, (on_progress, _) in list(self._waiting.items()):
            position = await runs_store.queue_position(self.sessions, run_id)
            if position is None:  # cancelled, or taken by another process
                self.take(run_id)
                continue
            if self._told.get(run_id) != position and on_progress is not None:
                self._told[run_id] = position
                await call_safely(on_progress, Progress(run_id, phase="queued", position=position))
