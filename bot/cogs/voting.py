"""Votes and favorites from raw reaction events (messages need not be in the cache).

Only reactions on the bot's genre messages count (looked up by message id in the store); bots,
the bot itself included, are ignored; ⭐ marks a favorite and removing it withdraws it.

The stored vote always equals what the message shows for that user: 👍 only is +1, 👎 only
is -1, both is the one added later, neither is no vote (skin tones count as the base emoji,
and each variant is its own reaction). The cog keeps, per (message, user), which vote
reactions it saw added and not removed (:class:`ShownVotes`), and stores the vote they imply.

After a restart (or when that memory was evicted) the bot has not seen the earlier reactions.
It then starts from the stored vote, which equalled the reactions when the bot last saw them:
no vote means none shown; +1 means a 👍 is shown and any 👎 was added before it (so it loses
to the 👍); -1 the other way round. Only one case stays open: the user removes the reaction
behind the stored vote, and the bot does not know whether the other kind is still shown. It
then asks Discord (the message's reactions, one user-list call per vote reaction), and if
Discord cannot answer it assumes the other kind is not shown (no vote), the usual case.
Discord does not say in which order reactions were added, so when a user keeps two variants of
one kind (👍 and 👍🏽) and a 👎 across a restart and removes the later variant, the bot keeps
the stored vote's kind.

Reactions added or removed while the bot was offline send no event. At start and after a
gateway resume the cog's :class:`~bot.reconcile.ReactionReconciler` reads the reactions of the
recent genre messages back from Discord and hands each user's to :meth:`VotingCog.settle`,
which makes the stored vote and favorite what Discord shows (:meth:`ShownVotes.synced`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from bot.cogs.common import DOWNVOTE, FAVORITE, UPVOTE
from bot.reconcile import ReactionReconciler, Settled
from bot.store.generations import GenerationRef, generation_by_message
from bot.store.votes import add_favorite, get_vote, put_reactions, put_vote, remove_favorite

if TYPE_CHECKING:
    from bot.app import MicrogenreBot

log = logging.getLogger(__name__)

UP, DOWN = 1, -1
# (message, user) pairs whose shown reactions are remembered, for at most REMEMBER_S seconds
# since their last reaction; forgotten ones are read from the store (or Discord) again. A pair
# costs about 630 bytes: a day's worth under the soak's load kept the bot's RSS rising for an
# hour, while reaction order only matters within seconds to minutes.
MAX_REMEMBERED = 20_000
REMEMBER_S = 1_800.0


def reaction_kind(emoji: discord.PartialEmoji) -> str | None:
    """``"up"``, ``"down"``, ``"favorite"`` or None (skin tones count as the base emoji).

    >>> reaction_kind(discord.PartialEmoji(name="👍🏽"))
    'up'
    >>> reaction_kind(discord.PartialEmoji(name="🎸")) is None
    True
    """
    if emoji.id is not None or not emoji.name:
        return None
    if emoji.name == FAVORITE:
        return "favorite"
    value = vote_value(emoji.name)
    if value is None:
        return None
    return "up" if value == UP else "down"


def vote_value(name: str) -> int | None:
    """+1 for any 👍, -1 for any 👎, None for other emoji names.

    >>> vote_value("👎🏿"), vote_value("⭐")
    (-1, None)
    """
    if name.startswith(UPVOTE):
        return UP
    if name.startswith(DOWNVOTE):
        return DOWN
    return None


@dataclass(frozen=True)
class ShownVotes:
    """One user's 👍/👎 reactions on one message, as far as the bot knows.

    ``order``: vote emoji the bot saw added and not removed since, oldest first; they were
    added after any it did not see. ``unseen``: emoji Discord said are shown that the bot did
    not see added. ``unseen_up`` / ``unseen_down``: whether other reactions of that kind, never
    seen, are shown (True, False, or None: unknown). ``unseen_latest``: the later of the
    unseen kinds when both are shown (the stored vote).

    >>> shown = ShownVotes().added("👍").added("👎")
    >>> shown.vote(), shown.removed("👎").vote(), shown.removed("👍").vote()
    (-1, 1, -1)
    >>> after_restart = ShownVotes.from_stored(1).removed("👍")
    >>> after_restart.unresolved(), after_restart.resolved(frozenset({"👎"})).vote()
    ((1, -1), -1)
    """

    order: tuple[str, ...] = ()
    unseen: frozenset[str] = frozenset()
    unseen_up: bool | None = False
    unseen_down: bool | None = False
    unseen_latest: int | None = None

    @classmethod
    def from_stored(cls, vote: int | None) -> ShownVotes:
        """What the stored vote says is shown, when the bot saw none of the reactions."""
        if vote is None:
            return cls()
        if vote == UP:
            return cls(unseen_up=True, unseen_down=None, unseen_latest=UP)
        return cls(unseen_up=None, unseen_down=True, unseen_latest=DOWN)

    def _flag(self, value: int) -> bool | None:
        return self.unseen_up if value == UP else self.unseen_down

    def _with_flag(self, value: int, shown: bool | None) -> ShownVotes:
        if value == UP:
            return dataclasses.replace(self, unseen_up=shown)
        return dataclasses.replace(self, unseen_down=shown)

    def _unseen_shown(self, value: int) -> bool | None:
        if any(vote_value(n) == value for n in self.unseen):
            return True
        return self._flag(value)

    def added(self, name: str) -> ShownVotes:
        if name in self.order:  # a replayed event
            return self
        return dataclasses.replace(self, order=(*self.order, name), unseen=self.unseen - {name})

    def removed(self, name: str) -> ShownVotes:
        if name in self.order:
            return dataclasses.replace(self, order=tuple(n for n in self.order if n != name))
        if name in self.unseen:
            return dataclasses.replace(self, unseen=self.unseen - {name})
        value = vote_value(name)
        if value is None or self._flag(value) is not True:
            return self
        # An unseen reaction of that kind went; whether another one is shown is not known.
        return self._with_flag(value, None)

    def unresolved(self) -> tuple[int, ...]:
        """The kinds whose unseen reactions must be known to tell the vote (usually none)."""
        shown = (self._unseen_shown(UP), self._unseen_shown(DOWN))
        if self.order or True in shown:
            return ()
        return tuple(v for v, s in zip((UP, DOWN), shown, strict=True) if s is None)

    def resolved(self, names: frozenset[str] | None) -> ShownVotes:
        """Fill in the unknown kinds from the vote emoji Discord shows for the user now (None:
        Discord could not say; they are taken as not shown).

        Discord may already show reactions whose events are still queued; those are kept in
        ``unseen`` until their event arrives, so nothing is counted twice.
        """
        result = self
        for value in (UP, DOWN):
            if self._flag(value) is not None:
                continue
            found = {n for n in names or () if vote_value(n) == value and n not in self.order}
            result = result._with_flag(value, False)
            result = dataclasses.replace(result, unseen=result.unseen | found)
        return result

    def synced(self, names: frozenset[str]) -> ShownVotes:
        """Discord shows exactly the vote emoji ``names`` now (read back after downtime).

        Those the bot saw added keep their order; the others were added before them (while
        the bot was away, or before it started). When both kinds are among those others,
        Discord does not say which came last: the vote the bot knew is kept if it is one of
        them, else 👍.

        >>> ShownVotes.from_stored(1).synced(frozenset({"👎"})).vote()
        -1
        >>> ShownVotes.from_stored(-1).added("👍").synced(frozenset({"👍", "👎"})).vote()
        1
        """
        order = tuple(n for n in self.order if n in names)
        unseen = names - set(order)
        kinds = {vote_value(n) for n in unseen}
        known = self.vote()
        latest = known if known in kinds else UP
        return ShownVotes(order=order, unseen=unseen, unseen_latest=latest)

    def vote(self) -> int | None:
        """The vote the shown reactions make (an unknown kind counts as not shown)."""
        if self.order:
            return vote_value(self.order[-1])
        up, down = self._unseen_shown(UP) is True, self._unseen_shown(DOWN) is True
        if up and down:
            return self.unseen_latest or UP
        if up or down:
            return UP if up else DOWN
        return None


@dataclass
class _Turn:
    """A per-(message, user) lock and how many events hold or wait for it."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class VotingCog(commands.Cog):
    def __init__(self, bot: MicrogenreBot) -> None:
        self.bot = bot
        # discord.py runs every event handler as its own task; one lock per (message, user),
        # taken before the first await, keeps that user's events on that message in order
        # (an add followed by a remove must not be applied the other way round). The lock is
        # forgotten only when no event holds or waits for it.
        self._turns: dict[tuple[int, int], _Turn] = {}
        self._shown: OrderedDict[tuple[int, int], ShownVotes] = OrderedDict()
        self._shown_at: dict[tuple[int, int], float] = {}
        # Messages being reconciled -> the users whose events arrived since (see watching).
        self._watched: dict[int, list[set[int]]] = {}
        self.reconciler: ReactionReconciler | None = None

    async def cog_load(self) -> None:
        days = self.bot.config.bot.reconcile_days
        self.reconciler = ReactionReconciler(self.bot, self.bot.sessions, self, days=days)

    async def cog_unload(self) -> None:
        if self.reconciler is not None:
            await self.reconciler.close()

    @commands.Cog.listener()
    async def on_ready(self) -> None:
        if self.reconciler is not None:
            self.reconciler.request("ready")

    @commands.Cog.listener()
    async def on_resumed(self) -> None:
        if self.reconciler is not None:
            self.reconciler.request("resumed")

    @contextlib.asynccontextmanager
    async def _ordered(self, payload: discord.RawReactionActionEvent) -> AsyncIterator[None]:
        async with self._turn((payload.message_id, payload.user_id)):
            yield

    @contextlib.asynccontextmanager
    async def _turn(self, key: tuple[int, int]) -> AsyncIterator[None]:
        turn = self._turns.setdefault(key, _Turn())
        turn.users += 1
        try:
            async with turn.lock:
                yield
        finally:
            turn.users -= 1
            if turn.users == 0 and self._turns.get(key) is turn:
                del self._turns[key]

    def _ignored(self, payload: discord.RawReactionActionEvent) -> bool:
        if payload.guild_id is None:
            return True
        me = self.bot.user
        if me is not None and payload.user_id == me.id:
            return True
        if payload.member is not None and payload.member.bot:
            return True
        cached = self.bot.get_user(payload.user_id)
        return bool(cached is not None and cached.bot)

    @commands.Cog.listener()
    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        await self._on_reaction(payload, added=True)

    @commands.Cog.listener()
    async def on_raw_reaction_remove(self, payload: discord.RawReactionActionEvent) -> None:
        await self._on_reaction(payload, added=False)

    async def _on_reaction(self, payload: discord.RawReactionActionEvent, *, added: bool) -> None:
        kind = reaction_kind(payload.emoji)
        if kind is None or self._ignored(payload):
            return
        for touched in self._watched.get(payload.message_id, ()):
            touched.add(payload.user_id)
        async with self._ordered(payload):
            ref = await self._generation(payload)
            if ref is None:
                return
            if kind == "favorite":
                change = add_favorite if added else remove_favorite
                await change(self.bot.sessions, ref.id, payload.user_id)
            else:
                await self._vote(payload, ref, added=added)
            log.debug("%s %s on %r by %s", kind, added, ref.genre_name, payload.user_id)
            self.bot.service.metrics.vote(kind, added=added)

    async def _generation(self, payload: discord.RawReactionActionEvent) -> GenerationRef | None:
        """The genre of the message, waiting for one being recorded in that channel."""

        async def lookup() -> GenerationRef | None:
            return await generation_by_message(self.bot.sessions, payload.message_id)

        ref = await self.bot.posts_in_flight.find(payload.channel_id, lookup)
        if ref is None or ref.guild_id != payload.guild_id:
            return None
        return ref

    async def _vote(
        self, payload: discord.RawReactionActionEvent, ref: GenerationRef, *, added: bool
    ) -> None:
        key = (payload.message_id, payload.user_id)
        name = str(payload.emoji.name)
        shown = self._forget(key)
        if shown is None:
            stored = await get_vote(self.bot.sessions, ref.id, payload.user_id)
            shown = ShownVotes.from_stored(stored)
        shown = shown.added(name) if added else shown.removed(name)
        if unknown := shown.unresolved():
            shown = shown.resolved(await self._shown_on_discord(payload, unknown))
        self._remember(key, shown)
        await put_vote(self.bot.sessions, ref.id, payload.user_id, shown.vote())

    def _forget(self, key: tuple[int, int]) -> ShownVotes | None:
        self._shown_at.pop(key, None)
        return self._shown.pop(key, None)

    def _remember(self, key: tuple[int, int], shown: ShownVotes) -> None:
        now = time.monotonic()
        self._shown[key] = shown
        self._shown_at[key] = now
        # Oldest first: the front is what was remembered longest ago.
        while self._shown:
            oldest = next(iter(self._shown))
            if len(self._shown) <= MAX_REMEMBERED and now - self._shown_at[oldest] <= REMEMBER_S:
                break
            del self._shown[oldest]
            self._shown_at.pop(oldest, None)

    # ------------------------------------------------------------------ reconciliation

    def counted(self, emoji: str) -> bool:
        """Whether reactions with ``emoji`` (a unicode emoji) make votes or favorites."""
        return reaction_kind(discord.PartialEmoji(name=emoji)) is not None

    @contextlib.contextmanager
    def watching(self, message_id: int) -> Iterator[set[int]]:
        """The users whose reaction events on ``message_id`` arrive while the block runs (an
        event counts from the moment it reaches the cog, before it waits for its turn)."""
        touched: set[int] = set()
        watchers = self._watched.setdefault(message_id, [])
        watchers.append(touched)
        try:
            yield touched
        finally:
            watchers.remove(touched)
            if not watchers:
                del self._watched[message_id]

    async def settle(
        self,
        generation_id: int,
        message_id: int,
        user_id: int,
        shown: frozenset[str],
        touched: set[int],
    ) -> Settled:
        """Make the user's stored vote and favorite what ``shown`` (the counted emoji Discord
        shows for them now) make; skipped when an event of theirs arrived since the read
        (``touched``): the read is older than that event."""
        key = (message_id, user_id)
        async with self._turn(key):
            if user_id in touched:
                return Settled.SKIPPED
            memory = self._forget(key)
            if memory is None:
                memory = ShownVotes.from_stored(
                    await get_vote(self.bot.sessions, generation_id, user_id)
                )
            synced = memory.synced(frozenset(n for n in shown if vote_value(n) is not None))
            self._remember(key, synced)
            changed = await put_reactions(
                self.bot.sessions,
                generation_id,
                user_id,
                vote=synced.vote(),
                favorite=FAVORITE in shown,
            )
        if changed:
            log.debug("reconciled %s on message %s: %s", user_id, message_id, sorted(shown))
        return Settled.CHANGED if changed else Settled.UNCHANGED

    async def _shown_on_discord(
        self, payload: discord.RawReactionActionEvent, values: tuple[int, ...]
    ) -> frozenset[str] | None:
        """The user's reactions of the kinds in ``values`` on the message now, from Discord
        (one call for the message, one per vote reaction on it); None if Discord cannot say."""
        channel = self.bot.get_partial_messageable(payload.channel_id)
        after = discord.Object(id=payload.user_id - 1)
        names: set[str] = set()
        try:
            message = await channel.fetch_message(payload.message_id)
            for reaction in message.reactions:
                name = str(reaction.emoji)
                if vote_value(name) not in values:
                    continue
                async for user in reaction.users(limit=1, after=after):
                    if user.id == payload.user_id:
                        names.add(name)
        except discord.HTTPException as exc:
            log.warning(
                "cannot read the reactions of message %s (%s); assuming no other vote",
                payload.message_id,
                exc,
            )
            return None
        return frozenset(names)


async def setup(bot: MicrogenreBot) -> None:
    await bot.add_cog(VotingCog(bot))
