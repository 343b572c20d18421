"""The genre of the day: one genre posted in a server's chosen channel at its chosen UTC hour.

:class:`DailyScheduler` runs in every bot process, from the moment the bot is ready (its servers
known) until it closes: at once, then every ``CHECK_INTERVAL_S``, it asks the store which
schedules of this process's servers are due (:func:`bot.store.daily.schedules_due`: the hour
has come today and today has no post yet, so a bot that was down at the hour posts once when it
is back, the same UTC day). For each, it

1. checks the channel in discord.py's cache: gone, or the bot lacks View Channel, Send Messages
   or Add Reactions there → no post;
2. claims the day in the store (an INSERT on the unique ``(guild_id, day)``: with several
   processes or restarts, one wins; see :mod:`bot.store.daily`);
3. generates one genre through :meth:`bot.service.GenreService.deliver` (the fair queue, the
   server's model, its issued names), bounded by ``ATTEMPT_TIMEOUT_S``;
4. posts it, records its message on the generation and on the claim, and queues the 👍 👎 ⭐
   reactions on a :class:`~bot.pacing.ReactionPacer`.

A failed attempt posts nothing, gives its claim and its genre back, logs one WARNING line, and
records the reason on the schedule (shown by ``/genre stats`` and ``/genre daily set``) with the
next try: the start of the next hour, never sooner.

The clock is a ``now()`` callable (aware UTC datetimes), so tests drive the days and hours.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

import discord

from bot.cogs._genre_buttons import genre_view
from bot.cogs.common import REACTIONS
from bot.cogs.generation import DEFAULT_WEIRDNESS, NO_MENTIONS
from bot.errors import MicrogenreError
from bot.lineage import DAILY, Lineage
from bot.pacing import ReactionJob, ReactionPacer
from bot.retrain.queue import holder_id, holder_is_dead
from bot.service import GenreRequest
from bot.store import daily as daily_store
from bot.store.generations import attach_message
from bot.tasks import cancel_and_wait
from bot.text import MESSAGE, clip, escape
from model.errors import ModelError

if TYPE_CHECKING:
    from bot.app import MicrogenreBot
    from bot.store.generations import Reserved

log = logging.getLogger(__name__)

# Seconds between two checks of the schedules (the hour is reached within this).
CHECK_INTERVAL_S = 60.0
# One attempt (the wait in the fair queue included) gives up after this, well before another
# process may take its claim over (bot.store.daily.STALE_CLAIM).
ATTEMPT_TIMEOUT_S = 5 * 60.0
# Posts of one check that run at once (many servers can share an hour).
MAX_CONCURRENT_POSTS = 4
# What the bot needs in the channel: permission attribute, its name in Discord.
NEEDED = (
    ("view_channel", "View Channel"),
    ("send_messages", "Send Messages"),
    ("add_reactions", "Add Reactions"),
)
# Problems are shown in an embed field: kept short.
MAX_PROBLEM_CHARS = 300


def system_now() -> datetime:
    return datetime.now(UTC)


def next_hour(now: datetime) -> datetime:
    """The start of the hour after ``now``: when a failed attempt is tried again.

    >>> next_hour(datetime(2027, 3, 1, 23, 41, tzinfo=UTC)).isoformat()
    '2027-03-02T00:00:00+00:00'
    """
    return now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)


def first_post(hour: int, set_at: datetime) -> datetime:
    """When a schedule set at ``set_at`` posts first: today at ``hour`` if that is still to
    come, else tomorrow.

    >>> first_post(9, datetime(2027, 3, 1, 8, 30, tzinfo=UTC)).isoformat()
    '2027-03-01T09:00:00+00:00'
    >>> first_post(9, datetime(2027, 3, 1, 9, 30, tzinfo=UTC)).isoformat()
    '2027-03-02T09:00:00+00:00'
    """
    today = daily_store.due_at(set_at.date(), hour)
    return today if set_at <= today else today + timedelta(days=1)


def missing_permissions(permissions: discord.Permissions) -> list[str]:
    """The permissions of :data:`NEEDED` that ``permissions`` lacks, by their Discord names.

    >>> missing_permissions(discord.Permissions(view_channel=True, send_messages=True))
    ['Add Reactions']
    """
    return [name for attribute, name in NEEDED if not getattr(permissions, attribute)]


def gone(channel_id: int) -> str:
    return (
        f"the channel <#{channel_id}> is gone (deleted, or I can no longer see it): "
        "choose another with `/genre daily set`."
    )


def channel_problem(guild: discord.Guild | None, channel_id: int) -> str | None:
    """Why the bot cannot post the genre of the day in ``channel_id`` (None: it can), from
    discord.py's cache, which Discord keeps up to date (channel and role events)."""
    channel = guild.get_channel(channel_id) if guild is not None else None
    if guild is None or not isinstance(channel, discord.TextChannel):
        return gone(channel_id)
    missing = missing_permissions(channel.permissions_for(guild.me))
    if missing:
        return (
            f"I lack {', '.join(missing)} in <#{channel_id}>: a server manager can give me those."
        )
    return None


class DailyProblem(Exception):
    """An attempt failed for a reason the server's admins should see (the message says it)."""


@dataclass
class Attempt:
    """One server's try on one day; ``message_id`` once its message is out."""

    guild_id: int
    channel: discord.TextChannel
    day: date
    message_id: int | None = None


class DailyScheduler:
    """See the module docstring. ``tick()`` is one check; ``start()``/``close()`` the loop."""

    def __init__(
        self,
        bot: MicrogenreBot,
        *,
        now: Callable[[], datetime] | None = None,
        check_s: float | None = None,
    ) -> None:
        self.bot = bot
        # Read here, not as defaults, so that a test may replace the module's clock.
        self.now = now if now is not None else system_now
        self.check_s = CHECK_INTERVAL_S if check_s is None else check_s
        self.holder = holder_id()
        self.pacer = ReactionPacer(self._add_reaction)
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_POSTS)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Check now and every ``check_s`` after (call once the guilds are known: at ready);
        a second call while it runs does nothing."""
        if self._task is None or self._task.done():
            loop = asyncio.get_running_loop()
            self._task = loop.create_task(self._loop(), name="daily-scheduler")

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        await self.pacer.close()

    async def _loop(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("checking the genre of the day failed")
            await asyncio.sleep(self.check_s)

    async def tick(self) -> int:
        """Post the genres of the day that are due now in this process's servers; how many."""
        if self.bot.closing:
            return 0
        now = self.now()
        guild_ids = [guild.id for guild in self.bot.guilds]
        due = await daily_store.schedules_due(self.bot.sessions, now=now, guild_ids=guild_ids)
        posted = await asyncio.gather(*(self._try(schedule, now) for schedule in due))
        return sum(posted)

    async def _try(self, schedule: daily_store.Schedule, now: datetime) -> bool:
        async with self._slots:
            with self.bot.track_work():
                return await self._try_now(schedule, now)

    async def _try_now(self, schedule: daily_store.Schedule, now: datetime) -> bool:
        guild = self.bot.get_guild(schedule.guild_id)
        problem = channel_problem(guild, schedule.channel_id)
        if problem is not None:
            await self._failed(schedule, problem, now)
            return False
        assert guild is not None
        channel = guild.get_channel(schedule.channel_id)
        assert isinstance(channel, discord.TextChannel)
        day = now.astimezone(UTC).date()
        claimed = await daily_store.claim_day(
            self.bot.sessions, schedule.guild_id, day, self.holder, is_dead=holder_is_dead
        )
        if not claimed:
            return False
        attempt = Attempt(schedule.guild_id, channel, day)
        try:
            await asyncio.wait_for(self._post(attempt), ATTEMPT_TIMEOUT_S)
        except DailyProblem as exc:
            problem = str(exc)
        except TimeoutError:
            problem = "generating the genre took too long; the generator may be overloaded."
        except (MicrogenreError, ModelError) as exc:
            problem = f"the generator could not make a genre: {exc}"
        except Exception:  # a bug: logged, and tried again an hour later like any problem
            log.exception("the genre of the day of guild %s failed", schedule.guild_id)
            problem = "something went wrong on my side; it has been logged."
        finally:
            if attempt.message_id is None:  # nothing went out: another try may claim the day
                with contextlib.suppress(Exception):
                    await daily_store.give_back_claim(
                        self.bot.sessions, schedule.guild_id, day, self.holder
                    )
        if problem is not None:
            await self._failed(schedule, problem, now)
        return attempt.message_id is not None

    async def _post(self, attempt: Attempt) -> None:
        """Generate one genre, post it, record it; raises :class:`DailyProblem` on a refusal."""
        channel_id = attempt.channel.id
        request = GenreRequest(
            1,
            guild_id=attempt.guild_id,
            user_id=None,
            channel_id=channel_id,
            weirdness=DEFAULT_WEIRDNESS,
            lineage=Lineage(DAILY),
        )
        delivery = await self.bot.service.deliver(request)
        if not delivery.reserved:
            raise DailyProblem("the model found no genre this server has not seen yet.")
        unposted: list[Reserved] = list(delivery.reserved)
        reserved = unposted[0]
        assert reserved.generation_id is not None
        sessions = self.bot.sessions
        try:
            if not await daily_store.holds_claim(
                sessions, attempt.guild_id, attempt.day, self.holder
            ):
                log.warning(
                    "the daily post of guild %s was taken over; not posting", attempt.guild_id
                )
                return
            with self.bot.posts_in_flight.posting(channel_id):
                message = await self._send(attempt.channel, reserved.name, reserved.generation_id)
                attempt.message_id = message.id
                unposted.clear()
                await attach_message(
                    sessions, reserved.generation_id, message_id=message.id, channel_id=channel_id
                )
            recorded = await daily_store.record_post(
                sessions,
                attempt.guild_id,
                attempt.day,
                self.holder,
                channel_id=channel_id,
                message_id=message.id,
                generation_id=reserved.generation_id,
            )
        finally:
            await self.bot.service.release(attempt.guild_id, unposted)
        if not recorded:
            log.warning("the daily post of guild %s was taken over while posting", attempt.guild_id)
        log.info("posted the genre of the day of guild %s: %s", attempt.guild_id, reserved.name)

        async def forbidden() -> None:
            await daily_store.record_problem(
                sessions,
                attempt.guild_id,
                f"I could not add the vote reactions in <#{channel_id}>: I lack Add Reactions.",
                now=self.now(),
                retry_at=None,
            )

        self.pacer.submit(ReactionJob(channel_id, message.id, REACTIONS, forbidden))

    async def _send(
        self, channel: discord.TextChannel, name: str, generation_id: int
    ) -> discord.Message:
        text = f"📅 **Genre of the day**\n🎵 **{escape(name)}**\nVote with 👍 / 👎, ⭐ to keep it."
        try:
            return await channel.send(
                clip(text, MESSAGE), view=genre_view(generation_id), allowed_mentions=NO_MENTIONS
            )
        except discord.NotFound:
            raise DailyProblem(gone(channel.id)) from None
        except discord.Forbidden:
            raise DailyProblem(
                f"Discord refused my post in <#{channel.id}>: I need View Channel, "
                "Send Messages and Add Reactions there."
            ) from None
        except discord.HTTPException as exc:
            raise DailyProblem(f"Discord did not take my post ({exc.status}).") from None

    async def _failed(self, schedule: daily_store.Schedule, problem: str, now: datetime) -> None:
        retry_at = next_hour(now)
        problem = clip(problem, MAX_PROBLEM_CHARS)
        log.warning(
            "genre of the day of guild %s not posted: %s (next try %s UTC)",
            schedule.guild_id,
            problem,
            f"{retry_at:%Y-%m-%d %H:%M}",
        )
        await daily_store.record_problem(
            self.bot.sessions, schedule.guild_id, problem, now=now, retry_at=retry_at
        )

    async def _add_reaction(self, channel_id: int, message_id: int, emoji: str) -> None:
        partial = self.bot.get_partial_messageable(channel_id).get_partial_message(message_id)
        await partial.add_reaction(emoji)
