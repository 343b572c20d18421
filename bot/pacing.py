"""Paced per-channel queues for the vote reactions, and turns for the messages a bot sends into
a channel, so the bot stays within Discord's limits.

Discord lets a bot add about 4 reactions per second in a channel (and 50 requests per second in
all). A burst of `/genre new` would otherwise queue dozens of reactions at once, get 429s, and
fail commands whose genres were already posted. Here each channel with pending reactions has one
task that adds them in order, at most ``per_channel_per_s``, and all channels together at most
``global_per_s``. The queues are bounded; a lane's task ends when its queue is empty. A failed
reaction is logged and dropped: reactions are a convenience, users can react themselves.

Messages sent into a channel (the replies of the "More like this" buttons) share a limit of 5
per 5 seconds per channel. :class:`MessagePacer` gives each send a turn: one at a time per
channel, each at least ``window_s`` (plus a margin) after the answer to the send ``per_window``
turns before it, in the order they asked, so a burst of clicks on one genre waits its turn
instead of meeting 429s. (Interaction follow-ups go through webhooks, which
Discord limits per interaction instead.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import discord

log = logging.getLogger(__name__)

AddReaction = Callable[[int, int, str], Awaitable[None]]  # (channel_id, message_id, emoji)
OnForbidden = Callable[[], Awaitable[None]]


@dataclass(eq=False)
class GlobalPace:
    """The spacing that the paced calls of a process share: at most ``per_s`` calls per second
    (Discord's global limit, 50 requests/s, counts reactions and messages alike).

    >>> GlobalPace(40.0).interval
    0.025
    """

    per_s: float = 40.0
    next_at: float = 0.0  # the loop time of the next free slot

    def __post_init__(self) -> None:
        if self.per_s <= 0:
            raise ValueError("the global rate must be positive")

    @property
    def interval(self) -> float:
        return 1.0 / self.per_s

    async def wait(self) -> None:
        """Wait for the next free slot and take it."""
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            if self.next_at <= now:
                break
            await asyncio.sleep(self.next_at - now)
        self.next_at = now + self.interval


@dataclass(frozen=True)
class ReactionJob:
    """Add ``emojis`` to one message, in order. ``on_forbidden`` is awaited (once) when the
    bot turns out not to be allowed to react in the channel."""

    channel_id: int
    message_id: int
    emojis: tuple[str, ...]
    on_forbidden: OnForbidden | None = None


@dataclass(eq=False)
class _Lane:
    """The queue of one channel and the task working it off."""

    items: deque[tuple[ReactionJob, str]] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None
    next_at: float = 0.0


class ReactionPacer:
    """See the module docstring. ``submit`` never blocks; ``close`` drains for a while, then
    cancels what is left."""

    def __init__(
        self,
        add: AddReaction,
        *,
        per_channel_per_s: float = 4.0,
        global_per_s: float = 40.0,
        max_pending_per_channel: int = 600,
        max_pending: int = 6000,
        global_pace: GlobalPace | None = None,
    ) -> None:
        if per_channel_per_s <= 0 or global_per_s <= 0:
            raise ValueError("reaction rates must be positive")
        self._add = add
        self._channel_interval = 1.0 / per_channel_per_s
        # Shared with the process's other paced calls when given (then global_per_s is its).
        self._global = global_pace if global_pace is not None else GlobalPace(global_per_s)
        self.max_pending_per_channel = max_pending_per_channel
        self.max_pending = max_pending
        self._lanes: dict[int, _Lane] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False
        self.added = 0
        self.failed = 0
        self.dropped = 0

    @property
    def pending(self) -> int:
        """Reactions queued and not yet attempted."""
        return sum(len(lane.items) for lane in self._lanes.values())

    @property
    def active_channels(self) -> int:
        """Channels with a task working off their queue."""
        return len(self._lanes)

    async def join(self) -> None:
        """Wait until every queue is worked off and its task has ended."""
        await self._idle.wait()

    def submit(self, job: ReactionJob) -> bool:
        """Queue ``job``; False (and logged) when closed or the queue is full."""
        if self._closed:
            self.dropped += len(job.emojis)
            return False
        lane = self._lanes.get(job.channel_id)
        queued = len(lane.items) if lane is not None else 0
        if (
            queued + len(job.emojis) > self.max_pending_per_channel
            or self.pending + len(job.emojis) > self.max_pending
        ):
            self.dropped += len(job.emojis)
            log.warning(
                "reaction queue full (channel %s: %d pending); message %s gets no reactions",
                job.channel_id,
                queued,
                job.message_id,
            )
            return False
        if lane is None:
            lane = self._lanes[job.channel_id] = _Lane()
            self._idle.clear()
        lane.items.extend((job, emoji) for emoji in job.emojis)
        if lane.task is None:
            lane.task = asyncio.get_running_loop().create_task(
                self._run(job.channel_id, lane), name=f"reactions-{job.channel_id}"
            )
        return True

    async def close(self, grace_s: float = 2.0) -> None:
        """Stop accepting work, let the queues drain for up to ``grace_s``, cancel the rest."""
        self._closed = True
        tasks = [lane.task for lane in self._lanes.values() if lane.task is not None]
        if not tasks:
            return
        _, unfinished = await asyncio.wait(tasks, timeout=grace_s)
        left = self.pending
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)
        if left:
            self.dropped += left
            log.info("shutting down: %d reactions not added", left)

    # ------------------------------------------------------------------ the lanes

    async def _run(self, channel_id: int, lane: _Lane) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                if not lane.items:
                    # Linger one interval, so that work arriving now is still paced.
                    delay = lane.next_at - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    if not lane.items:
                        return
                    continue
                await self._wait_for_slot(lane, loop)
                if not lane.items:  # emptied by a Forbidden while waiting
                    continue
                job, emoji = lane.items.popleft()
                await self._add_one(channel_id, lane, job, emoji)
        finally:
            if self._lanes.get(channel_id) is lane:
                del self._lanes[channel_id]
            if not self._lanes:
                self._idle.set()

    async def _wait_for_slot(self, lane: _Lane, loop: asyncio.AbstractEventLoop) -> None:
        """Wait until both this channel and all channels together may send again.

        The gaps are measured from when calls really start (a late wake-up never lets the
        next call come early); lanes waiting for the same global slot take turns.
        """
        while True:
            now = loop.time()
            start = max(lane.next_at, self._global.next_at)
            if start <= now:
                break
            await asyncio.sleep(start - now)
        lane.next_at = now + self._channel_interval
        self._global.next_at = now + self._global.interval

    async def _add_one(self, channel_id: int, lane: _Lane, job: ReactionJob, emoji: str) -> None:
        try:
            await self._add(channel_id, job.message_id, emoji)
        except discord.Forbidden:
            await self._forbidden(channel_id, lane, job)
        except discord.NotFound:
            # The message (or channel) is gone: its other reactions would fail too.
            dropped = self._drop(lane, lambda j: j is job)
            self.failed += 1
            log.info("message %s is gone; %d reactions dropped", job.message_id, len(dropped))
        except (discord.HTTPException, discord.RateLimited, aiohttp.ClientError, OSError) as e:
            self.failed += 1
            log.warning(
                "could not add %s to message %s in channel %s: %s",
                emoji,
                job.message_id,
                channel_id,
                e,
            )
        else:
            self.added += 1

    async def _forbidden(self, channel_id: int, lane: _Lane, job: ReactionJob) -> None:
        """No permission to react in the channel: drop everything queued there, tell each job."""
        dropped = self._drop(lane, lambda _: True)
        self.failed += 1
        log.warning(
            "missing permission to add reactions in channel %s; %d reactions dropped",
            channel_id,
            len(dropped) + 1,
        )
        jobs = [job, *(j for j in dropped if j is not job)]
        for told in dict.fromkeys(jobs):
            if told.on_forbidden is not None:
                await _guarded(told.on_forbidden(), f"on_forbidden of message {told.message_id}")

    def _drop(self, lane: _Lane, which: Callable[[ReactionJob], bool]) -> list[ReactionJob]:
        """Remove the queued items of the jobs ``which`` selects; returns those jobs in order."""
        kept: deque[tuple[ReactionJob, str]] = deque()
        removed: list[ReactionJob] = []
        for job, emoji in lane.items:
            if which(job):
                if not any(r is job for r in removed):
                    removed.append(job)
                self.dropped += 1
            else:
                kept.append((job, emoji))
        lane.items = kept
        return removed


async def _guarded(coro: Awaitable[Any], what: str) -> None:
    """Await a callback of the caller's; its failure is logged, never kills the lane."""
    try:
        await coro
    except Exception:
        log.exception("%s failed", what)


@dataclass(eq=False)
class _ChannelTurns:
    """One channel's recent sends, its turn lock, and how many sends hold or wait for it."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    sent: deque[float] = field(default_factory=deque)
    users: int = 0


class MessagePacer:
    """See the module docstring: ``async with pacer.turn(channel_id): await channel.send(...)``.

    A channel's state is dropped once nobody waits and its window has passed, so the pacer stays
    small however many channels it has seen.
    """

    def __init__(
        self,
        *,
        per_window: int = 5,
        window_s: float = 5.0,
        margin_s: float = 0.25,
        global_pace: GlobalPace | None = None,
    ) -> None:
        if per_window < 1 or window_s <= 0 or margin_s < 0:
            raise ValueError("per_window must be >= 1, window_s > 0 and margin_s >= 0")
        self.per_window = per_window
        self.window_s = window_s + margin_s
        self._global = global_pace
        self._channels: dict[int, _ChannelTurns] = {}

    @property
    def channels(self) -> int:
        """Channels with a send in their current window, or one waiting."""
        return len(self._channels)

    @contextlib.asynccontextmanager
    async def turn(self, channel_id: int) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        turns = self._channels.setdefault(channel_id, _ChannelTurns())
        turns.users += 1
        try:
            async with turns.lock:
                self._expire(turns.sent, loop.time())
                if len(turns.sent) >= self.per_window:
                    await asyncio.sleep(turns.sent[0] + self.window_s - loop.time())
                    self._expire(turns.sent, loop.time())
                if self._global is not None:
                    await self._global.wait()
                try:
                    yield
                finally:
                    # Counted from the answer: Discord received the send at some time before
                    # it, so the next turn is a full window after, however slow the send was.
                    turns.sent.append(loop.time())
        finally:
            turns.users -= 1
            self._forget_quiet_channels(loop.time())

    def _expire(self, sent: deque[float], now: float) -> None:
        while sent and now - sent[0] >= self.window_s:
            sent.popleft()

    def _forget_quiet_channels(self, now: float) -> None:
        quiet = [
            channel_id
            for channel_id, turns in self._channels.items()
            if turns.users == 0 and (not turns.sent or now - turns.sent[-1] >= self.window_s)
        ]
        for channel_id in quiet:
            del self._channels[channel_id]
