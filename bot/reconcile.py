"""Bring the store back in line with Discord after the bot was away.

**Reactions.** Votes and favorites come from reaction events, and no event reaches a bot that is
down (or whose gateway connection was cut). :class:`ReactionReconciler` therefore reads back,
at start and after every gateway resume, the reactions of the genre messages posted in the last
``[bot] reconcile_days`` days in this process's servers, through Discord's REST API: the message
(``GET /channels/{c}/messages/{m}``: its reactions and their counts) and, for each 👍/👎/⭐ that
someone besides the bot left, the users (``GET .../reactions/{emoji}``, 100 a page). Other bots
never count. Each user's reactions are then handed to the voting cog (:class:`VoteSettler`),
which stores the vote and favorite they make, so the store equals what people see.

It runs in the background, one message at a time, at most ``requests_per_s`` requests per
second in all (a fraction of Discord's global 50/s, so commands are never starved); discord.py
waits out each route's bucket and honours 429s and their ``retry_after``. A deleted message or
channel (404) or a channel the bot may not read (403) is logged and skipped; other errors back
off (doubling) and, after ``max_errors`` in a row, end the run until the next start or resume.

A read is a snapshot: a user whose reaction event arrives while the message is being
reconciled is not settled from it; the message is read again (up to ``MAX_READS`` times), and
after that the live events keep that user up to date.

**Reservations.** A genre is reserved in the store before its message is posted. A process
killed in between leaves a reservation that hides the genre in that server. The message is a
follow-up of the interaction, whose token lives 15 minutes, so a reservation older than that
can never be posted: :class:`ReservationSweeper` releases those at start and every
``SWEEP_INTERVAL_S`` after (a process restarted at once would otherwise only release the ones
it left behind at its next start).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

import aiohttp
import discord

from bot.store.engine import SessionMaker
from bot.store.generations import (
    PostedGeneration,
    posted_generations,
    release_stale_reservations,
)
from bot.store.models import utcnow
from bot.store.votes import reactors
from bot.tasks import cancel_and_wait

log = logging.getLogger(__name__)

# Requests per second the reconciler makes in all (Discord allows a bot 50/s).
REQUESTS_PER_S = 5.0
# Users per page of GET .../reactions/{emoji} (Discord's maximum).
PAGE = 100
# Reads of one message while events keep arriving for users on it.
MAX_READS = 3
# Errors in a row (5xx, network, 429s discord.py gave up on) before a run gives up...
MAX_ERRORS = 5
# ...and the first wait after one, doubled after each in a row up to MAX_BACKOFF_S.
ERROR_BACKOFF_S = 2.0
MAX_BACKOFF_S = 60.0
# An interaction token lives 15 minutes: a reservation older than that is never posted.
STALE_RESERVATION_AGE = timedelta(minutes=15)
SWEEP_INTERVAL_S = 5 * 60.0
# Discord's error code for a deleted channel (a deleted message is 10008).
UNKNOWN_CHANNEL = 10003


class Settled(enum.Enum):
    """What settling one user's reactions did."""

    CHANGED = "changed"
    UNCHANGED = "unchanged"
    SKIPPED = "skipped"  # an event for that user arrived meanwhile: read again


class VoteSettler(Protocol):
    """The voting cog, as the reconciler uses it."""

    def counted(self, emoji: str) -> bool:
        """Whether reactions with this emoji make votes or favorites."""
        ...

    def watching(self, message_id: int) -> AbstractContextManager[set[int]]:
        """Collect the users whose reaction events on ``message_id`` arrive in the block."""
        ...

    async def settle(
        self,
        generation_id: int,
        message_id: int,
        user_id: int,
        shown: frozenset[str],
        touched: set[int],
    ) -> Settled:
        """Store the vote and favorite that ``shown`` (the user's counted emoji on Discord
        now) make, unless ``user_id`` is in ``touched``."""
        ...


@dataclass
class ReconcileReport:
    """What one run did."""

    messages: int = 0  # genre messages in the window
    changed: int = 0  # users whose vote or favorite changed
    skipped: int = 0  # messages deleted, in deleted channels or channels without access
    failed: int = 0  # messages given up on after an error
    rereads: int = 0  # messages read again because events arrived meanwhile
    aborted: bool = False  # the run ended early after too many errors in a row


class Pace:
    """At most ``per_s`` calls per second: :meth:`wait` before each call. Idle time is not
    saved up, so calls never bunch up after a pause.

    >>> Pace(per_s=4.0).interval
    0.25
    """

    def __init__(self, per_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if per_s <= 0:
            raise ValueError("requests per second must be > 0")
        self.interval = 1.0 / per_s
        self._clock = clock
        self._next = 0.0

    async def wait(self) -> None:
        delay = self._next - self._clock()
        if delay > 0:
            await asyncio.sleep(delay)
        self._next = self._clock() + self.interval


class ReactionReconciler:
    """See the module docstring. :meth:`request` starts a run in the background (a request
    during a run makes one more run after it); :meth:`close` cancels it."""

    def __init__(
        self,
        client: discord.Client,
        sessions: SessionMaker,
        settler: VoteSettler,
        *,
        days: int,
        requests_per_s: float = REQUESTS_PER_S,
        error_backoff_s: float = ERROR_BACKOFF_S,
        max_errors: int = MAX_ERRORS,
    ) -> None:
        self.client = client
        self.sessions = sessions
        self.settler = settler
        self.days = days
        self.pace = Pace(requests_per_s)
        self.error_backoff_s = error_backoff_s
        self.max_errors = max_errors
        self.last_report: ReconcileReport | None = None
        self.runs = 0  # runs ended (done or failed)
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self._idle = asyncio.Event()
        self._idle.set()

    def request(self, reason: str) -> None:
        """Reconcile in the background (``reason``: "ready", "resumed", for the log)."""
        if self.days <= 0:
            return
        if self._task is not None and not self._task.done():
            self._again = True
            return
        log.info("reconciling the reactions of the last %d days (%s)", self.days, reason)
        self._idle.clear()
        self._task = asyncio.get_running_loop().create_task(self._runs(), name="reconcile")

    @property
    def idle(self) -> bool:
        """No run is going on or due."""
        return self._idle.is_set()

    async def wait_idle(self) -> None:
        """Wait until no run is going on or due."""
        await self._idle.wait()

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._idle.set()

    async def _runs(self) -> None:
        try:
            while True:
                self._again = False
                try:
                    self.last_report = await self.run_once()
                except Exception:
                    log.exception("reconciling reactions failed; the next start or resume retries")
                self.runs += 1
                if not self._again:
                    return
        finally:
            self._idle.set()

    async def run_once(self) -> ReconcileReport:
        """Reconcile every genre message of the window in this process's servers, newest
        first."""
        report = ReconcileReport()
        guild_ids = [guild.id for guild in self.client.guilds]
        since = utcnow() - timedelta(days=self.days)
        generations = await posted_generations(self.sessions, since=since, guild_ids=guild_ids)
        report.messages = len(generations)
        closed: set[int] = set()  # channels deleted or without access, in this run
        errors = 0
        for generation in generations:
            if generation.channel_id in closed:
                report.skipped += 1
                continue
            try:
                await self._message(generation, report)
            except (discord.Forbidden, discord.NotFound) as exc:
                report.skipped += 1
                self._unreadable(generation, exc, closed)
            except (discord.HTTPException, aiohttp.ClientError, OSError, TimeoutError) as exc:
                errors += 1
                report.failed += 1
                log.warning("could not read message %s: %s", generation.message_id, exc)
                if errors >= self.max_errors:
                    report.aborted = True
                    log.warning(
                        "%d errors in a row: reconciling stops until the next start", errors
                    )
                    break
                await asyncio.sleep(min(self.error_backoff_s * 2 ** (errors - 1), MAX_BACKOFF_S))
                continue
            errors = 0
        log.info(
            "reconciled the reactions of %d genre messages: %d users' votes or favorites "
            "changed, %d messages skipped (gone or no access), %d failed",
            report.messages,
            report.changed,
            report.skipped,
            report.failed,
        )
        return report

    @staticmethod
    def _unreadable(
        generation: PostedGeneration, exc: discord.HTTPException, closed: set[int]
    ) -> None:
        """Log why a message is skipped; a channel without access or deleted is closed."""
        channel, message = generation.channel_id, generation.message_id
        if isinstance(exc, discord.Forbidden):
            closed.add(channel)
            log.warning(
                "no access to channel %s (View Channel and Read Message History are needed): "
                "its genre messages are not reconciled",
                channel,
            )
        elif exc.code == UNKNOWN_CHANNEL:
            closed.add(channel)
            log.info("channel %s is gone: not reconciled", channel)
        else:
            log.info("message %s in channel %s is gone: not reconciled", message, channel)

    async def _message(self, generation: PostedGeneration, report: ReconcileReport) -> None:
        """Settle every user who shows or had a reaction on the message."""
        for read in range(MAX_READS):
            if read:
                report.rereads += 1
            with self.settler.watching(generation.message_id) as touched:
                shown = await self._read(generation)
                users = set(shown) | await reactors(self.sessions, generation.id)
                busy = False
                for user_id in sorted(users):
                    outcome = await self.settler.settle(
                        generation.id,
                        generation.message_id,
                        user_id,
                        frozenset(shown.get(user_id, ())),
                        touched,
                    )
                    report.changed += outcome is Settled.CHANGED
                    busy |= outcome is Settled.SKIPPED
            if not busy:
                return
        log.debug("message %s keeps changing: live events keep it", generation.message_id)

    async def _read(self, generation: PostedGeneration) -> dict[int, set[str]]:
        """User id -> the counted emoji they show on the message (bots left out)."""
        channel = self.client.get_partial_messageable(
            generation.channel_id, guild_id=generation.guild_id
        )
        await self.pace.wait()
        message = await channel.fetch_message(generation.message_id)
        me = getattr(self.client.user, "id", None)
        shown: dict[int, set[str]] = {}
        for reaction in message.reactions:
            name = str(reaction.emoji)
            if reaction.is_custom_emoji() or not self.settler.counted(name):
                continue
            async for user in self._users(reaction):
                if not user.bot and user.id != me:
                    shown.setdefault(user.id, set()).add(name)
        return shown

    async def _users(self, reaction: Any) -> AsyncIterator[Any]:
        """The users of a reaction (normal and super), a paced page at a time; none is asked
        for when the bot's own reaction is the only one."""
        normal, burst = reaction.normal_count, reaction.burst_count
        if normal + burst == 0:  # no count details: all of them normal
            normal = reaction.count
        for kind, count, mine in (
            (None, normal, reaction.me),
            (discord.ReactionType.burst, burst, reaction.me_burst),
        ):
            if count <= int(mine):  # nobody but the bot
                continue
            remaining, after = count, None
            while remaining > 0:
                await self.pace.wait()
                page = [
                    user
                    async for user in reaction.users(
                        limit=min(PAGE, remaining), after=after, type=kind
                    )
                ]
                if not page:
                    break
                for user in page:
                    yield user
                remaining -= len(page)
                after = discord.Object(id=max(user.id for user in page))


class ReservationSweeper:
    """Releases stale unposted reservations at :meth:`start` and every ``interval_s`` after."""

    def __init__(
        self,
        sessions: SessionMaker,
        *,
        stale_after: timedelta = STALE_RESERVATION_AGE,
        interval_s: float = SWEEP_INTERVAL_S,
    ) -> None:
        self.sessions = sessions
        self.stale_after = stale_after
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    async def sweep(self) -> list[str]:
        """Release the stale reservations now; returns their genre names."""
        names = await release_stale_reservations(
            self.sessions, older_than=utcnow() - self.stale_after
        )
        if names:
            log.info(
                "released %d genres reserved but never posted (the bot stopped in between): %s",
                len(names),
                ", ".join(names[:10]) + (" ..." if len(names) > 10 else ""),
            )
        return names

    async def start(self) -> None:
        """One sweep now (an error is logged, never fatal), then one every ``interval_s``."""
        await self._guarded_sweep()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="sweeper")

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self._guarded_sweep()

    async def _guarded_sweep(self) -> None:
        try:
            await self.sweep()
        except Exception:
            log.exception("releasing stale reservations failed")
