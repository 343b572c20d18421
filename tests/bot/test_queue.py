"""The fair queue of `/genre new`: positions, round-robin across servers, refusals, cancelling."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.errors import (
    GuildQueueFullError,
    QueueRefusedError,
    UserQueueFullError,
    WaitTooLongError,
)
from bot.queue import FairQueue, QueueSettings, ThroughputMeter, Ticket


async def drain() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


@dataclass
class Caller:
    """One request: its task, the ticket once dispatched and every position it heard."""

    guild: Hashable
    user: int | None
    task: asyncio.Task[Ticket] | None = None
    positions: list[int] = field(default_factory=list)

    @property
    def ticket(self) -> Ticket | None:
        if self.task is None or not self.task.done() or self.task.cancelled():
            return None
        return None if self.task.exception() else self.task.result()

    @property
    def position(self) -> int | None:
        return self.positions[-1] if self.positions else None


async def arrive(queue: FairQueue, guild: Hashable, user: int | None, count: int = 1) -> Caller:
    caller = Caller(guild, user)
    caller.task = asyncio.create_task(
        queue.acquire(
            guild_id=guild, user_id=user, count=count, on_position=caller.positions.append
        )
    )
    await drain()
    return caller


def finish(queue: FairQueue, caller: Caller, delivered: int = 1) -> None:
    assert caller.ticket is not None
    queue.release(caller.ticket, delivered=delivered)


async def test_positions_are_first_second_third_and_move_up() -> None:
    queue = FairQueue(QueueSettings(slots=1))
    running = await arrive(queue, 1, 10)
    waiting = [await arrive(queue, 1, 11 + i) for i in range(3)]
    assert running.ticket is not None and running.positions == []
    assert [c.position for c in waiting] == [1, 2, 3]
    finish(queue, running)
    await drain()
    assert waiting[0].ticket is not None
    assert [c.position for c in waiting[1:]] == [1, 2]
    finish(queue, waiting[0])
    await drain()
    assert waiting[2].positions == [3, 2, 1]


async def test_a_server_with_one_waiting_is_not_stuck_behind_a_server_with_150() -> None:
    queue = FairQueue(QueueSettings(slots=1, max_wait_s=1e9, guild_cap=1000))
    first = await arrive(queue, "A", 0)
    crowd = [await arrive(queue, "A", 1 + i) for i in range(150)]
    lone = await arrive(queue, "B", 999)
    assert lone.position == 2  # behind A's head only
    assert [c.position for c in crowd[:3]] == [1, 3, 4]
    finish(queue, first)
    await drain()
    assert crowd[0].ticket is not None and lone.ticket is None
    assert lone.position == 1
    finish(queue, crowd[0])
    await drain()
    assert lone.ticket is not None  # the very next slot
    assert crowd[1].position == 1


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def measured_queue(settings: QueueSettings, genres: int, seconds: float) -> FairQueue:
    """A queue that has measured ``genres`` in ``seconds`` of full slots, then gone idle."""
    clock = Clock()
    queue = FairQueue(settings, clock=clock)
    holders = [await arrive(queue, 0, 100 + i) for i in range(settings.slots)]
    waiter = await arrive(queue, 0, 99)  # waits: the measuring window opens
    clock.now = seconds
    for i, holder in enumerate(holders):
        finish(queue, holder, delivered=genres if i == 0 else 0)
    await drain()
    finish(queue, waiter, delivered=0)
    await drain()
    assert queue.meter.samples == 1 and queue.meter.rate == pytest.approx(genres / seconds)
    assert queue.running == 0 and queue.waiting == 0
    return queue


async def test_refuses_what_would_wait_too_long_with_the_estimate() -> None:
    queue = await measured_queue(QueueSettings(slots=1, max_wait_s=10.0), genres=1, seconds=1.0)
    running = await arrive(queue, 1, 1, count=5)
    waiting = await arrive(queue, 1, 2, count=5)  # 10 genres ahead at 1/s: exactly 10 s
    assert waiting.task is not None and not waiting.task.done()
    refused = await arrive(queue, 2, 3, count=1)  # 11 s
    assert refused.task is not None
    error = refused.task.exception()
    assert isinstance(error, WaitTooLongError)
    assert error.wait_s == pytest.approx(11.0)
    assert "about 11 s" in str(error) and "10 s" in str(error)
    assert queue.waiting == 1 and queue.lanes == 1  # the refused request left no trace
    finish(queue, running, delivered=5)
    await drain()
    assert waiting.ticket is not None


async def test_the_rest_of_an_admitted_click_waits_instead_of_being_refused() -> None:
    """'More like this' posts its first variation, then asks for the other two as a follow-up:
    the click was admitted once, so its rest waits its turn (behind everyone's first) rather
    than being refused for the wait, or for its server's full lane, after one reply."""
    settings = QueueSettings(slots=1, max_wait_s=10.0, guild_cap=1)
    queue = await measured_queue(settings, genres=1, seconds=1.0)
    running = await arrive(queue, 1, 1, count=5)
    waiting = await arrive(queue, 1, 2, count=5)  # its lane is now full, 10 s ahead
    refused = await arrive(queue, 1, 3, count=2)
    assert refused.task is not None and isinstance(refused.task.exception(), QueueRefusedError)
    rest = Caller(1, 4)
    rest.task = asyncio.create_task(queue.acquire(guild_id=1, user_id=4, count=2, follow_up=True))
    await drain()
    assert not rest.task.done() and queue.waiting == 2
    finish(queue, running, delivered=5)
    await drain()
    finish(queue, waiting, delivered=5)
    await drain()
    assert rest.ticket is not None


async def test_the_prior_alone_refuses_nothing() -> None:
    """A fresh bot's first burst is admitted: its prior (a guess) once refused 17 of 100
    'More like this' clicks that the bot then served in half the estimated time. The caps
    still bound the line, and the first measured second makes the estimate count."""
    queue = FairQueue(QueueSettings(slots=1, max_wait_s=10.0, prior_genres_per_s=1.0))
    running = await arrive(queue, 1, 1, count=5)
    later = [await arrive(queue, 1 + i % 2, 2 + i, count=5) for i in range(4)]
    assert all(c.task is not None and not c.task.done() for c in later)
    assert queue.waiting == 4 and queue.estimate_wait_s(25) == pytest.approx(25.0)
    assert running.ticket is not None


async def test_a_free_slot_is_never_refused_for_its_estimate() -> None:
    queue = FairQueue(QueueSettings(slots=2, max_wait_s=1.0, prior_genres_per_s=1.0))
    first = await arrive(queue, 1, 1, count=5)
    second = await arrive(queue, 1, 2, count=5)
    assert first.ticket is not None and second.ticket is not None


@pytest.mark.parametrize(
    ("settings_", "arrivals", "error"),
    [
        # Server 1 may have two waiting; the third waiting is refused (one is generating).
        (
            QueueSettings(slots=1, guild_cap=2),
            [(1, 1), (1, 2), (1, 3), (1, 4)],
            GuildQueueFullError,
        ),
        # A user may have two in line or generating.
        (QueueSettings(slots=1, user_cap=2), [(1, 7), (2, 7), (3, 7)], UserQueueFullError),
    ],
)
async def test_caps_per_server_and_per_user(
    settings_: QueueSettings, arrivals: list[tuple[int, int]], error: type[QueueRefusedError]
) -> None:
    queue = FairQueue(settings_)
    callers = [await arrive(queue, g, u) for g, u in arrivals]
    *admitted, refused = callers
    assert all(c.task is not None and not c.task.cancelled() for c in admitted)
    assert all(c.task is not None and (not c.task.done() or c.ticket) for c in admitted)
    assert refused.task is not None
    exc = refused.task.exception()
    assert isinstance(exc, error) and "about" in str(exc)
    # Once the first is done there is room again.
    finish(queue, callers[0])
    await drain()
    again = await arrive(queue, *arrivals[-1])
    assert again.task is not None and not (again.task.done() and again.task.exception())


async def test_a_cancelled_waiter_leaves_the_line_and_the_others_move_up() -> None:
    queue = FairQueue(QueueSettings(slots=1))
    running = await arrive(queue, 1, 1)
    a, b, c = [await arrive(queue, g, u) for g, u in [(1, 2), (1, 3), (2, 4)]]
    assert [x.position for x in (a, b, c)] == [1, 3, 2]
    assert a.task is not None
    a.task.cancel()
    await drain()
    assert a.task.cancelled()
    # Server 1's turn comes first still: b moves from 3rd to 1st.
    assert [x.position for x in (b, c)] == [1, 2]
    assert queue.waiting == 2 and queue.users == 3
    finish(queue, running)
    await drain()
    assert b.ticket is not None and c.position == 1


async def test_a_caller_cancelled_just_after_being_granted_frees_its_slot() -> None:
    queue = FairQueue(QueueSettings(slots=1))
    running = await arrive(queue, 1, 1)
    waiting = await arrive(queue, 1, 2)
    third = await arrive(queue, 1, 3)
    finish(queue, running)  # grants `waiting`, whose task has not resumed yet
    assert waiting.task is not None
    waiting.task.cancel()
    await drain()
    assert waiting.task.cancelled()
    assert third.ticket is not None and queue.running == 1


async def test_lanes_and_users_disappear_when_empty() -> None:
    queue = FairQueue(QueueSettings(slots=2))
    callers = [await arrive(queue, g, u) for g in range(5) for u in (g * 10, g * 10 + 1)]
    while queue.running:
        for c in callers:
            if c.ticket is not None and not c.ticket.done:
                finish(queue, c)
        await drain()
    assert (queue.waiting, queue.running, queue.lanes, queue.users) == (0, 0, 0, 0)


def test_the_meter_measures_only_while_someone_waits() -> None:
    now = [0.0]
    meter = ThroughputMeter(4.0, window_s=1.0, smoothing=0.5, clock=lambda: now[0])
    meter.record(100, saturated=False)  # idle: nothing learnt
    assert meter.rate == 4.0
    meter.saturated()
    now[0] = 0.5
    meter.record(6, saturated=True)  # window not closed yet
    assert meter.rate == 4.0
    now[0] = 2.0
    meter.record(14, saturated=True)  # 20 genres in 2 s: the first sample replaces the prior
    assert meter.rate == 10.0
    now[0] = 3.0
    meter.record(2, saturated=False)  # 2 genres/s, averaged in; then the window closes
    assert meter.rate == 6.0
    now[0] = 10.0
    meter.record(50, saturated=True)  # no window open
    assert meter.rate == 6.0


def test_the_meter_counts_a_shared_round_released_at_once() -> None:
    # 16 callers of one shared round finish together 4 s after the line formed: 4 genres/s,
    # not the 0.25/s of the first release alone (which refused a lone caller's 17-genre wait).
    now = [0.0]
    meter = ThroughputMeter(4.0, window_s=1.0, smoothing=0.5, clock=lambda: now[0])
    meter.saturated()
    for i in range(16):
        now[0] = 4.0 + i * 0.001
        meter.record(1, saturated=True)
    assert meter.rate == pytest.approx(4.0)
    now[0] = 6.0  # the next round, 2 s later: 8 genres in 2 s, averaged in
    for _ in range(8):
        meter.record(1, saturated=True)
    assert meter.rate == pytest.approx(0.5 * 4.0 + 0.5 * 4.0)
    assert meter.samples == 2


async def test_the_estimate_follows_the_measured_throughput() -> None:
    now = [0.0]
    queue = FairQueue(
        QueueSettings(slots=1, max_wait_s=1e9, prior_genres_per_s=1.0, window_s=1.0),
        clock=lambda: now[0],
    )
    running = await arrive(queue, 1, 1, count=5)
    waiting = await arrive(queue, 1, 2, count=5)
    now[0] = 0.25
    finish(queue, running, delivered=5)  # 5 genres in 0.25 s: under one window
    await drain()
    assert queue.meter.rate == 1.0
    assert await arrive(queue, 1, 3, count=5)
    now[0] = 1.0
    finish(queue, waiting, delivered=5)  # 10 genres in 1 s
    await drain()
    assert queue.meter.rate == 10.0
    assert queue.estimate_wait_s(50) == 5.0


# Random orders of arrivals, completions and cancellations.
ARRIVE = st.tuples(st.just("arrive"), st.integers(0, 2), st.integers(0, 30))
MIXED = st.lists(
    st.one_of(
        ARRIVE,
        st.tuples(st.just("finish"), st.integers(0, 50), st.just(0)),
        st.tuples(st.just("cancel"), st.integers(0, 50), st.just(0)),
    ),
    max_size=60,
)
# A burst (the line builds up, so fairness matters), then anything in any order.
OPS = st.tuples(st.lists(ARRIVE, max_size=20), MIXED).map(lambda t: t[0] + t[1])


async def replay(ops: list[tuple[str, int, int]], slots: int) -> None:
    queue = FairQueue(QueueSettings(slots=slots, max_wait_s=1e9, user_cap=2, guild_cap=1000))
    callers: list[Caller] = []
    events: list[tuple[str, int]] = []  # ("arrive" | "dispatch" | "cancel", caller index)
    dispatched: set[int] = set()

    def record_dispatches() -> None:
        for i, c in enumerate(callers):
            if c.ticket is not None and i not in dispatched:
                dispatched.add(i)
                events.append(("dispatch", i))

    def step_invariants() -> None:
        assert queue.running <= slots
        assert queue.waiting == 0 or queue.running == slots
        order = queue.order()
        assert [t.position for t in order] == list(range(1, len(order) + 1))

    for op, a, b in ops:
        if op == "arrive":
            callers.append(await arrive(queue, a, b))
            task = callers[-1].task
            assert task is not None
            if not (task.done() and task.exception()):
                events.append(("arrive", len(callers) - 1))
        else:
            candidates = [
                i
                for i, c in enumerate(callers)
                if c.task is not None
                and (
                    (op == "finish" and c.ticket is not None and not c.ticket.done)
                    or (op == "cancel" and not c.task.done())
                )
            ]
            if not candidates:
                continue
            i = candidates[a % len(candidates)]
            if op == "finish":
                finish(queue, callers[i])
            else:
                task = callers[i].task
                assert task is not None
                task.cancel()
                events.append(("cancel", i))
        await drain()
        record_dispatches()
        step_invariants()
    # Finish everything, one at a time (each finish dispatches at most one, so the recorded
    # order is the dispatch order): every admitted request not cancelled is dispatched once.
    while queue.running:
        finish(queue, next(c for c in callers if c.ticket is not None and not c.ticket.done))
        await drain()
        record_dispatches()
        step_invariants()
    admitted = {i for kind, i in events if kind == "arrive"}
    cancelled = {i for kind, i in events if kind == "cancel"}
    dispatch_list = [i for kind, i in events if kind == "dispatch"]
    assert len(dispatch_list) == len(set(dispatch_list))
    assert set(dispatch_list) | cancelled == admitted and not set(dispatch_list) & cancelled
    assert (queue.waiting, queue.running, queue.lanes, queue.users) == (0, 0, 0, 0)
    check_fifo_and_round_robin(callers, events)


def check_fifo_and_round_robin(callers: list[Caller], events: list[tuple[str, int]]) -> None:
    when = {(kind, i): t for t, (kind, i) in enumerate(events)}
    dispatches = [(t, i) for t, (kind, i) in enumerate(events) if kind == "dispatch"]
    # FIFO within a server: dispatched in arrival order.
    for guild in {c.guild for c in callers}:
        mine = [i for _, i in dispatches if callers[i].guild == guild]
        assert mine == sorted(mine, key=lambda i: when[("arrive", i)])
    # Round-robin: a server is not served twice while another server waited throughout.
    for k, (t1, i1) in enumerate(dispatches):
        guild = callers[i1].guild
        later = [(t, i) for t, i in dispatches[k + 1 :] if callers[i].guild == guild]
        if not later:
            continue
        t2, _ = later[0]
        served_between = {callers[i].guild for t, i in dispatches if t1 < t < t2}
        for h, other in enumerate(callers):
            if other.guild == guild or ("arrive", h) not in when:
                continue
            left = when.get(("dispatch", h), when.get(("cancel", h), len(events)))
            if when[("arrive", h)] < t1 and left > t2:
                assert other.guild in served_between, (guild, other.guild, events)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS, slots=st.integers(1, 3))
def test_every_order_dispatches_each_request_once_round_robin(
    ops: list[tuple[str, int, int]], slots: int
) -> None:
    asyncio.run(replay(ops, slots))
