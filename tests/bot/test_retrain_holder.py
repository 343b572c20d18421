"""Who holds the training slot, and when a holder is known to be dead: only a process whose
pids this process can see (same kernel boot, same pid namespace) is ever judged, so two
containers that share a hostname never mistake each other's live runs for dead ones."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from bot.retrain.queue import holder_id, holder_is_dead

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")


def exited_pid() -> int:
    """The pid of a child that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def live_pid() -> Iterator[int]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_this_process_is_alive() -> None:
    assert not holder_is_dead(holder_id())


def test_a_process_of_this_machine_that_exited_is_dead() -> None:
    assert holder_is_dead(holder_id(exited_pid()))


def test_a_live_process_is_alive(live_pid: int) -> None:
    assert not holder_is_dead(holder_id(live_pid))


def test_a_reused_pid_does_not_make_a_dead_holder_alive(live_pid: int) -> None:
    """The holder recorded its process's start; another process with its pid is not it."""
    machine, pid, started, token = holder_id(live_pid).split(":")
    assert started.isdigit()
    assert holder_is_dead(f"{machine}:{pid}:{int(started) + 1}:{token}")


@pytest.mark.parametrize(
    "holder",
    [
        # Another container with this hostname (its own pid namespace): the old
        # ``hostname:pid`` holders could not tell it from a process of this one.
        "{host}:{pid}:abc123",
        # A process of another machine or pid namespace.
        "0123456789abcdef:{pid}:1:abc123",
        # Nothing this code wrote.
        "",
        "garbage",
        "{host}:notapid:1:x",
    ],
)
def test_a_holder_that_cannot_be_judged_here_is_never_dead(holder: str) -> None:
    holder = holder.format(host=socket.gethostname(), pid=exited_pid())
    assert not holder_is_dead(holder)


def test_holder_ids_are_unique_per_process_and_fit_the_lease_column() -> None:
    from bot.store.models import RetrainLease

    width = RetrainLease.__table__.c.holder.type.length
    first, second = holder_id(), holder_id()
    assert first != second
    assert len(first) <= width
