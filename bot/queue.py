"""A fair line for `/genre new`: per-server FIFO lanes served round-robin into a few slots.

Every request takes a ticket. At most ``slots`` tickets generate at once (concurrent requests
share the pipeline's rounds, so the slots are sized to keep those rounds well filled); the
others wait in their server's lane. When a slot frees up, the next server in turn sends the
head of its lane, then goes to the back of the turn order, so a server with 150 waiting delays
a server with one waiting by at most one dispatch. Waiting callers hear their place in that
round-robin order (1 = next) through ``on_position`` whenever it changes.

A request is refused only when it could not be served in time: its estimated wait, the genres
ahead of it divided by the measured throughput, exceeds ``max_wait_s`` (once a throughput has
been measured: until then the estimate rests on a prior guess, and only the caps refuse), or
its server already has ``guild_cap`` waiting, or its user already has ``user_cap`` in line or
generating.

>>> order = round_robin([["a1", "a2", "a3"], ["b1"], ["c1", "c2"]])
>>> order
['a1', 'b1', 'c1', 'a2', 'c2', 'a3']
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from bot.config import BotConfig
from bot.errors import GuildQueueFullError, UserQueueFullError, WaitTooLongError

# The same callback as the worker's: here it hears the place in the bot's line (1 = next).
from model.protocol import PositionCallback

log = logging.getLogger(__name__)

T = TypeVar("T")


# Below this measured rate (genres/s) the estimate treats the generator as stalled.
MIN_RATE = 1e-3


def round_robin(lanes: Sequence[Sequence[T]]) -> list[T]:
    """The dispatch order of ``lanes`` (in turn order): heads first, then second items, ….

    >>> round_robin([[1, 2], [], [3]])
    [1, 3, 2]
    """
    order: list[T] = []
    depth = 0
    active = [lane for lane in lanes if lane]
    while active:
        order.extend(lane[depth] for lane in active)
        depth += 1
        active = [lane for lane in active if len(lane) > depth]
    return order


@dataclass(frozen=True)
class QueueSettings:
    """Limits of the fair queue. The first four are ``[bot]`` keys, documented and defaulted
    once in :class:`bot.config.BotConfig`; the rest are the throughput estimate's own."""

    slots: int = BotConfig.generation_slots
    max_wait_s: float = BotConfig.max_wait_s
    guild_cap: int = BotConfig.guild_queue_cap
    user_cap: int = BotConfig.user_queue_cap
    # Throughput assumed before anything was measured, in genres per second.
    prior_genres_per_s: float = 4.0
    # Throughput is sampled over windows of at least this many seconds of full slots...
    window_s: float = 1.0
    # ...and each sample moves the estimate this far (exponentially weighted moving average).
    smoothing: float = 0.3

    @classmethod
    def from_config(cls, bot: BotConfig) -> QueueSettings:
        return cls(
            slots=bot.generation_slots,
            max_wait_s=bot.max_wait_s,
            guild_cap=bot.guild_queue_cap,
            user_cap=bot.user_queue_cap,
        )


class ThroughputMeter:
    """Genres per second the generator delivers when it has more work than slots.

    Only saturated periods (someone waiting in line) are measured: an idle bot's rate says how
    little was asked, not how much could be served. Until the first window closes the prior
    is used.

    >>> clock = iter([0.0, 2.0]).__next__
    >>> meter = ThroughputMeter(4.0, window_s=1.0, smoothing=0.5, clock=clock)
    >>> meter.saturated()          # t = 0: the line starts
    >>> meter.record(20, saturated=True)   # t = 2: 20 genres in 2 s, first sample
    >>> meter.rate
    10.0
    """

    def __init__(
        self,
        prior: float,
        *,
        window_s: float,
        smoothing: float,
        burst_s: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = prior
        self.window_s = window_s
        self.smoothing = smoothing
        self.clock = clock
        self.burst_s = burst_s
        self.samples = 0
        self._start: float | None = None
        self._genres = 0
        # The last closed window: (closed at, rate before it or None if first, genres, length).
        self._closed: tuple[float, float | None, int, float] | None = None

    def saturated(self) -> None:
        """Someone had to wait: a measuring window starts unless one is open."""
        if self._start is None:
            self._start = self.clock()
            self._genres = 0

    def record(self, genres: int, *, saturated: bool) -> None:
        """A generation delivered ``genres``; ``saturated``: someone is still waiting.

        Callers of one shared round finish together: those within ``burst_s`` of the release
        that closed a window count in that window.
        """
        if self._start is None:
            return
        now = self.clock()
        closed = self._closed
        if closed is not None and now - closed[0] <= self.burst_s:
            at, before, counted, elapsed = closed
            self._closed = (at, before, counted + genres, elapsed)
            self.rate = self._blend(before, (counted + genres) / elapsed)
        else:
            self._genres += genres
            elapsed = now - self._start
            if elapsed >= self.window_s:
                before = self.rate if self.samples else None
                self.rate = self._blend(before, self._genres / elapsed)
                self.samples += 1
                self._closed = (now, before, self._genres, elapsed)
                self._start, self._genres = now, 0
        if not saturated:
            self._start, self._genres = None, 0

    def _blend(self, before: float | None, sample: float) -> float:
        return sample if before is None else (1 - self.smoothing) * before + self.smoothing * sample


@dataclass(eq=False)
class Ticket:
    """One request's place in the queue (identity matters: two equal requests are distinct)."""

    guild_id: Hashable
    user_id: int | None
    count: int
    on_position: PositionCallback | None = None
    granted: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    position: int = 0
    running: bool = False
    done: bool = False
    # The rest of a request admitted before (the last variations of a click): it waits its
    # turn, but is never refused for the estimated wait or its server's full lane.
    follow_up: bool = False


class FairQueue:
    """Per-guild FIFO lanes dispatched round-robin into ``settings.slots``; see the module."""

    def __init__(
        self,
        settings: QueueSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings or QueueSettings()
        self.meter = ThroughputMeter(
            self.settings.prior_genres_per_s,
            window_s=self.settings.window_s,
            smoothing=self.settings.smoothing,
            clock=clock,
        )
        self._lanes: dict[Hashable, deque[Ticket]] = {}
        self._turns: deque[Hashable] = deque()
        self._users: dict[int, int] = {}
        self._running: list[Ticket] = []
        self._callbacks: set[asyncio.Task[object]] = set()

    @property
    def waiting(self) -> int:
        return sum(len(lane) for lane in self._lanes.values())

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def lanes(self) -> int:
        """Servers with someone waiting (empty lanes are dropped)."""
        return len(self._lanes)

    @property
    def users(self) -> int:
        """Users with a request waiting or generating."""
        return len(self._users)

    def order(self) -> list[Ticket]:
        """Waiting tickets in the order they will be dispatched (if nobody else arrives)."""
        return round_robin([list(self._lanes[g]) for g in self._turns])

    async def acquire(
        self,
        *,
        guild_id: Hashable,
        user_id: int | None,
        count: int,
        on_position: PositionCallback | None = None,
        follow_up: bool = False,
    ) -> Ticket:
        """Wait for a slot; raises a :class:`~bot.errors.QueueRefusedError` when refused.

        Call :meth:`release` with the returned ticket when the generation is over. A caller
        cancelled while waiting leaves the line; the others move up. A ``follow_up`` (the rest
        of a request admitted before) is refused only by its user's cap.
        """
        ticket = Ticket(guild_id, user_id, max(1, count), on_position, follow_up=follow_up)
        self._admit(ticket)
        self._dispatch()
        if ticket.running:
            self._report_positions()
            return ticket
        self.meter.saturated()
        self._report_positions()
        try:
            await ticket.granted
        except asyncio.CancelledError:
            if ticket.running:
                self.release(ticket, delivered=0)
            else:
                self._withdraw(ticket)
            raise
        return ticket

    def release(self, ticket: Ticket, *, delivered: int) -> None:
        """The generation of ``ticket`` is over after delivering ``delivered`` genres."""
        if ticket.done or not ticket.running:
            return
        ticket.done = True
        self._running.remove(ticket)
        self._forget_user(ticket.user_id)
        self.meter.record(delivered, saturated=bool(self._turns))
        self._dispatch()
        self._report_positions()

    def estimate_wait_s(self, genres_ahead: int) -> float:
        """Seconds until ``genres_ahead`` genres are delivered at the measured rate.

        >>> FairQueue(QueueSettings(prior_genres_per_s=4.0)).estimate_wait_s(100)
        25.0
        """
        return genres_ahead / max(self.meter.rate, MIN_RATE)

    def _wait_of(self, ticket: Ticket) -> float:
        ahead = sum(t.count for t in self._running)
        for t in self.order():
            ahead += t.count
            if t is ticket:
                break
        return self.estimate_wait_s(ahead)

    def _admit(self, ticket: Ticket) -> None:
        """Put ``ticket`` in its lane, or raise the refusal it deserves (and leave no trace)."""
        s = self.settings
        lane = self._lanes.get(ticket.guild_id)
        guild_waiting = len(lane) if lane else 0
        user_active = self._users.get(ticket.user_id, 0) if ticket.user_id is not None else 0
        self._enqueue(ticket)
        wait_s = self._wait_of(ticket)
        has_free_slot = len(self._running) < s.slots
        refusal: Exception | None = None
        if ticket.user_id is not None and user_active >= s.user_cap:
            refusal = UserQueueFullError(user_active, wait_s)
        elif ticket.follow_up:
            pass  # admitted once already: it waits its turn
        elif guild_waiting >= s.guild_cap:
            refusal = GuildQueueFullError(guild_waiting, wait_s)
        elif not has_free_slot and self.meter.samples and wait_s > s.max_wait_s:
            # Only a measured rate refuses: the prior is a guess, and a fresh bot's first burst
            # would be refused on it (100 clicks, 17 refused, served in half the estimate).
            refusal = WaitTooLongError(wait_s, s.max_wait_s)
        if refusal is not None:
            self._remove(ticket)
            log.info("queue refused a request of guild %s: %s", ticket.guild_id, refusal)
            raise refusal
        if ticket.user_id is not None:
            self._users[ticket.user_id] = user_active + 1

    def _enqueue(self, ticket: Ticket) -> None:
        lane = self._lanes.get(ticket.guild_id)
        if lane is None:
            lane = self._lanes[ticket.guild_id] = deque()
            self._turns.append(ticket.guild_id)
        lane.append(ticket)

    def _remove(self, ticket: Ticket) -> None:
        lane = self._lanes[ticket.guild_id]
        lane.remove(ticket)
        if not lane:
            del self._lanes[ticket.guild_id]
            self._turns.remove(ticket.guild_id)

    def _withdraw(self, ticket: Ticket) -> None:
        """A waiting caller gave up (cancelled): it leaves the line, the others move up."""
        if ticket.done:
            return
        ticket.done = True
        self._remove(ticket)
        self._forget_user(ticket.user_id)
        self._report_positions()

    def _forget_user(self, user_id: int | None) -> None:
        if user_id is None:
            return
        left = self._users.get(user_id, 1) - 1
        if left > 0:
            self._users[user_id] = left
        else:
            self._users.pop(user_id, None)

    def _dispatch(self) -> None:
        while len(self._running) < self.settings.slots and self._turns:
            guild_id = self._turns.popleft()
            lane = self._lanes[guild_id]
            ticket = lane.popleft()
            if lane:
                self._turns.append(guild_id)
            else:
                del self._lanes[guild_id]
            ticket.running = True
            ticket.position = 0
            self._running.append(ticket)
            if not ticket.granted.done():
                ticket.granted.set_result(None)

    def _report_positions(self) -> None:
        for position, ticket in enumerate(self.order(), start=1):
            if ticket.position != position:
                ticket.position = position
                self._notify(ticket, position)

    def _notify(self, ticket: Ticket, position: int) -> None:
        if ticket.on_position is None:
            return
        try:
            outcome = ticket.on_position(position)
        except Exception:  # a broken display must not break the queue
            log.exception("queue position callback failed")
            return
        if inspect.isawaitable(outcome):
            task = asyncio.ensure_future(outcome)
            self._callbacks.add(task)
            task.add_done_callback(self._callback_done)

    def _callback_done(self, task: asyncio.Task[object]) -> None:
        self._callbacks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("queue position callback failed: %s", task.exception())
