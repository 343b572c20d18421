"""Reconciliation: after downtime the stored votes and favorites equal the reactions Discord
shows. The real voting cog and reconciler on a real SQLite store; Discord is a small fake of
the discord.py objects the reconciler reads (the integration tests use the fake server)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest.mock import MagicMock

import discord
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select

from bot.cogs.voting import ShownVotes, VotingCog, vote_value
from bot.metrics import BotMetrics
from bot.posting import PostsInFlight
from bot.reconcile import Pace, ReactionReconciler, ReservationSweeper
from bot.store import schema
from bot.store.engine import SessionMaker, create_engine, create_sessionmaker
from bot.store.generations import attach_message, reserve_generations
from bot.store.models import Favorite, Generation, Vote
from tests.bot.test_cogs import CHANNEL, GUILD, reaction

pytestmark = pytest.mark.timeout(120)

BOT_ID = 1
ROBOT_ID = 2  # another bot: never a vote
EMOJI = ["👍", "👎", "👍🏽", "⭐"]


def http_error(cls: type[discord.HTTPException], status: int, code: int) -> Exception:
    return cls(MagicMock(status=status, reason="x"), {"code": code, "message": "x"})


@dataclass
class FakeReaction:
    """What the reconciler reads of a ``discord.Reaction``."""

    discord_: FakeDiscordState
    message_id: int
    emoji: str
    user_ids: list[int]

    def __post_init__(self) -> None:
        self.count = self.normal_count = len(self.user_ids)
        self.burst_count = 0
        self.me = BOT_ID in self.user_ids
        self.me_burst = False

    def is_custom_emoji(self) -> bool:
        return False

    async def users(
        self, *, limit: int | None = None, after: Any = None, type: Any = None
    ) -> AsyncIterator[Any]:
        self.discord_.requests.append(("users", self.message_id, self.emoji, time.monotonic()))
        await self.discord_.before_answer("users", self.message_id)
        ids = sorted(u for u in self.user_ids if after is None or u > after.id)
        for user_id in ids[: limit or len(ids)]:
            yield SimpleNamespace(id=user_id, bot=user_id in (BOT_ID, ROBOT_ID))


@dataclass
class FakeDiscordState:
    """Per (message, user), the reactions shown, in the order they were added."""

    shown: dict[tuple[int, int], list[str]] = field(default_factory=dict)
    errors: dict[int, Exception] = field(default_factory=dict)  # by message or channel id
    requests: list[tuple[str, int, str, float]] = field(default_factory=list)
    hooks: list[Callable[[str, int], Any]] = field(default_factory=list)

    def toggle(self, message_id: int, user_id: int, emoji: str) -> bool:
        names = self.shown.setdefault((message_id, user_id), [])
        if emoji in names:
            names.remove(emoji)
            return False
        names.append(emoji)
        return True

    async def before_answer(self, what: str, message_id: int) -> None:
        for hook in self.hooks:
            result = hook(what, message_id)
            if asyncio.iscoroutine(result):
                await result

    def message(self, message_id: int) -> Any:
        users: dict[str, list[int]] = {}
        for (mid, uid), names in self.shown.items():
            for name in names if mid == message_id else []:
                users.setdefault(name, []).append(uid)
        return SimpleNamespace(
            reactions=[FakeReaction(self, message_id, e, u) for e, u in users.items()]
        )


@dataclass
class FakeChannel:
    discord_: FakeDiscordState
    channel_id: int

    async def fetch_message(self, message_id: int) -> Any:
        self.discord_.requests.append(("message", message_id, "", time.monotonic()))
        await self.discord_.before_answer("message", message_id)
        for key in (self.channel_id, message_id):
            if key in self.discord_.errors:
                raise self.discord_.errors[key]
        return self.discord_.message(message_id)


class FakeBot:
    """The bot as the voting cog and the reconciler see it."""

    def __init__(self, sessions: SessionMaker, discord_: FakeDiscordState) -> None:
        self.sessions = sessions
        self.discord_ = discord_
        self.posts_in_flight = PostsInFlight()
        self.user = MagicMock(spec=discord.ClientUser, id=BOT_ID)
        self.guilds = [SimpleNamespace(id=GUILD)]
        self.get_user = MagicMock(return_value=None)
        self.service = SimpleNamespace(metrics=BotMetrics())

    def get_partial_messageable(self, channel_id: int, *, guild_id: int | None = None) -> Any:
        return FakeChannel(self.discord_, channel_id)


_names = itertools.count()


async def genre_message(sessions: SessionMaker, channel_id: int = CHANNEL) -> tuple[int, int]:
    """A posted genre message: ``(generation_id, message_id)``."""
    n = next(_names)
    [r] = await reserve_generations(
        sessions,
        [f"reconciled genre {n}"],
        guild_id=GUILD,
        channel_id=channel_id,
        user_id=3,
        model_name="m",
        model_version_id=None,
        options={},
    )
    assert r.generation_id is not None
    await attach_message(sessions, r.generation_id, message_id=20_000 + n, channel_id=channel_id)
    return r.generation_id, 20_000 + n


async def stored(sessions: SessionMaker, generation_id: int) -> tuple[dict[int, int], set[int]]:
    async with sessions.begin() as session:
        votes = await session.execute(
            select(Vote.user_id, Vote.value).where(Vote.generation_id == generation_id)
        )
        favorites = await session.scalars(
            select(Favorite.user_id).where(Favorite.generation_id == generation_id)
        )
        return {int(u): int(v) for u, v in votes.all()}, set(favorites.all())


def reconciler(bot: FakeBot, cog: VotingCog, **options: Any) -> ReactionReconciler:
    options.setdefault("requests_per_s", 10_000.0)
    return ReactionReconciler(bot, bot.sessions, cog, days=7, **options)  # type: ignore[arg-type]


def shown_on_discord(
    discord_: FakeDiscordState, message_id: int
) -> tuple[dict[int, int], set[int]]:
    """The votes and favorites the reactions make (the later of 👍/👎 wins; bots excluded)."""
    votes, favorites = {}, set()
    for (mid, uid), names in discord_.shown.items():
        if mid != message_id or uid in (BOT_ID, ROBOT_ID):
            continue
        kinds = [vote_value(n) for n in names if vote_value(n) is not None]
        if kinds:
            votes[uid] = kinds[-1]
        if "⭐" in names:
            favorites.add(uid)
    return votes, favorites


def test_synced_keeps_what_the_bot_saw_and_takes_the_rest_from_discord() -> None:
    # After a restart with a stored 👍: a switch made while the bot was down.
    assert ShownVotes.from_stored(1).synced(frozenset({"👎"})).vote() == -1
    assert ShownVotes.from_stored(-1).synced(frozenset()).vote() is None
    assert ShownVotes.from_stored(None).synced(frozenset({"👍🏽"})).vote() == 1
    # Both kinds shown and nothing seen: Discord does not say which came last; the stored vote
    # is kept when it is one of them (it was the later one when the bot last saw them).
    assert ShownVotes.from_stored(-1).synced(frozenset({"👍", "👎"})).vote() == -1
    # Seen since the restart (so added after everything done while the bot was down): it wins.
    seen = ShownVotes.from_stored(-1).added("👍")
    synced = seen.synced(frozenset({"👍", "👎"}))
    assert synced.vote() == 1
    assert synced.removed("👍").vote() == -1  # the 👎 from the downtime is still shown
    # The order the bot saw is kept: with 👍 👎 👍🏽 added in turn, the 👎 is later than the 👍.
    three = ShownVotes().added("👍").added("👎").added("👍🏽")
    assert three.synced(frozenset({"👍", "👎", "👍🏽"})).removed("👍🏽").vote() == -1
    # Discord's answer is exact: nothing unknown is left.
    assert synced.unresolved() == ()
    assert ShownVotes.from_stored(1).synced(frozenset()).removed("👍").unresolved() == ()


@dataclass(frozen=True)
class Phase:
    up: bool  # the bot is connected (events delivered) or down (Discord changes silently)
    toggles: tuple[tuple[int, str], ...]  # (user, emoji)
    early: int = 0  # when up: how many toggles arrive before the reconciliation reaches us


@st.composite
def downtimes(draw: st.DrawFn) -> list[Phase]:
    users = st.integers(100, 102)
    toggles = st.lists(st.tuples(users, st.sampled_from(EMOJI)), max_size=8).map(tuple)
    phases = []
    for up in [True, *draw(st.lists(st.booleans(), min_size=1, max_size=4))]:
        moves = draw(toggles)
        phases.append(Phase(up, moves, draw(st.integers(0, len(moves)))))
    return phases


async def play(url: str, phases: list[Phase]) -> None:
    """Each phase after a down phase starts with a restart (the cog forgets everything) and a
    reconciliation, with ``early`` events arriving before it. After every reconciliation the
    store equals Discord, except a user's 👍-or-👎 when both kinds were added unseen."""
    engine = create_engine(url)
    sessions = create_sessionmaker(engine)
    try:
        async with sessions.begin() as session:  # the examples share one database
            for table in (Vote, Favorite, Generation):
                await session.execute(delete(table))
        generation_id, message_id = await genre_message(sessions)
        discord_ = FakeDiscordState()
        for emoji in ("👍", "👎", "⭐"):
            discord_.toggle(message_id, BOT_ID, emoji)  # the bot's own reactions
        discord_.toggle(message_id, ROBOT_ID, "👍")
        bot = FakeBot(sessions, discord_)
        cog = VotingCog(bot)  # type: ignore[arg-type]
        seen_live: dict[int, list[str]] = {}
        ambiguous: set[int] = set()

        async def live(user: int, emoji: str) -> None:
            added = discord_.toggle(message_id, user, emoji)
            names = seen_live.setdefault(user, [])
            if added:
                names.append(emoji)
            elif emoji in names:
                names.remove(emoji)
            handler = cog.on_raw_reaction_add if added else cog.on_raw_reaction_remove
            await handler(reaction(user, message_id, emoji, add=added))

        async def check(skip: set[int]) -> None:
            votes, favorites = await stored(sessions, generation_id)
            want_votes, want_favorites = shown_on_discord(discord_, message_id)
            assert favorites == want_favorites
            for user in {*votes, *want_votes} - skip:
                assert votes.get(user) == want_votes.get(user), (user, discord_.shown)
            for user in skip:  # one of the kinds shown, whichever it was
                kinds = {vote_value(n) for n in discord_.shown[(message_id, user)]} - {None}
                assert votes.get(user) in (kinds or {None})

        was_up = False
        for phase in phases:
            if not phase.up:
                for user, emoji in phase.toggles:
                    discord_.toggle(message_id, user, emoji)
                was_up = False
                continue
            if not was_up:
                cog = VotingCog(bot)  # type: ignore[arg-type]
                seen_live.clear()
            for user, emoji in phase.toggles[: phase.early]:
                await live(user, emoji)
            if not was_up:
                ambiguous = set()
                for (mid, user), names in discord_.shown.items():
                    unseen = [n for n in names if n not in seen_live.get(user, [])]
                    kinds = {vote_value(n) for n in unseen} - {None}
                    people = mid == message_id and user not in (BOT_ID, ROBOT_ID)
                    seen_votes = [n for n in seen_live.get(user, []) if vote_value(n)]
                    if people and not seen_votes and len(kinds) == 2:
                        ambiguous.add(user)
                report = await reconciler(bot, cog).run_once()
                assert report.messages == 1 and report.skipped == 0
                await check(ambiguous)
            for user, emoji in phase.toggles[phase.early :]:
                await live(user, emoji)
            await check(ambiguous)
            was_up = True
        assert cog._turns == {}
    finally:
        await engine.dispose()


def test_after_downtime_the_store_equals_the_reactions(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'reconcile.db'}"
    schema.upgrade(url, "head")

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(downtimes())
    def check(phases: list[Phase]) -> None:
        asyncio.run(play(url, phases))

    check()


async def test_an_event_during_the_read_is_applied_and_not_overwritten(sessions: Any) -> None:
    """The read is a snapshot: a reaction event that arrives while it is taken wins, and the
    user is settled again from a fresh read."""
    generation_id, message_id = await genre_message(sessions)
    discord_ = FakeDiscordState()
    discord_.toggle(message_id, 7, "👍")  # made while the bot was down
    discord_.toggle(message_id, 8, "⭐")
    bot = FakeBot(sessions, discord_)
    cog = VotingCog(bot)  # type: ignore[arg-type]
    switched: list[bool] = []

    async def switch_during_the_first_read(what: str, mid: int) -> None:
        if what == "users" and not switched:
            switched.append(True)
            # 7 switches to 👎 after Discord answered (the answer read still shows 👍 only), and
            # the events are handled before the reconciler gets to 7.
            discord_.toggle(mid, 7, "👍")
            discord_.toggle(mid, 7, "👎")
            await cog.on_raw_reaction_remove(reaction(7, mid, "👍", add=False))
            await cog.on_raw_reaction_add(reaction(7, mid, "👎"))

    discord_.hooks.append(switch_during_the_first_read)
    report = await reconciler(bot, cog).run_once()
    assert await stored(sessions, generation_id) == ({7: -1}, {8})
    assert report.messages == 1 and report.rereads == 1
    assert len([r for r in discord_.requests if r[0] == "message"]) == 2


async def test_deleted_messages_and_forbidden_channels_are_skipped_and_logged(
    sessions: Any, caplog: pytest.LogCaptureFixture
) -> None:
    deleted_gen, deleted = await genre_message(sessions)
    ok_gen, ok = await genre_message(sessions)
    hidden_channel = CHANNEL + 1
    hidden = [await genre_message(sessions, hidden_channel) for _ in range(3)]
    gone_channel = CHANNEL + 2
    await genre_message(sessions, gone_channel)
    discord_ = FakeDiscordState()
    for _, message_id in [(deleted_gen, deleted), (ok_gen, ok), *hidden]:
        discord_.toggle(message_id, 7, "👍")
    discord_.errors[deleted] = http_error(discord.NotFound, 404, 10008)
    discord_.errors[hidden_channel] = http_error(discord.Forbidden, 403, 50001)
    discord_.errors[gone_channel] = http_error(discord.NotFound, 404, 10003)
    bot = FakeBot(sessions, discord_)
    caplog.set_level(logging.INFO, logger="bot.reconcile")
    report = await reconciler(bot, VotingCog(bot)).run_once()  # type: ignore[arg-type]
    assert await stored(sessions, ok_gen) == ({7: 1}, set())
    assert await stored(sessions, deleted_gen) == ({}, set())
    assert report.messages == 6 and report.skipped == 5 and report.changed == 1
    # One read per channel without access: its other messages are not asked for.
    assert sum(1 for r in discord_.requests if r[1] in {m for _, m in hidden}) == 1
    text = caplog.text
    assert f"message {deleted} in channel {CHANNEL} is gone" in text
    assert f"no access to channel {hidden_channel}" in text
    assert f"channel {gone_channel} is gone" in text
    assert "reconciled the reactions of 6 genre messages" in text


async def test_discord_errors_back_off_and_end_the_run(sessions: Any) -> None:
    for _ in range(8):
        await genre_message(sessions)
    discord_ = FakeDiscordState()
    discord_.errors[CHANNEL] = http_error(discord.HTTPException, 503, 0)
    bot = FakeBot(sessions, discord_)
    started = time.monotonic()
    report = await reconciler(
        bot,
        VotingCog(bot),  # type: ignore[arg-type]
        error_backoff_s=0.05,
        max_errors=3,
    ).run_once()
    elapsed = time.monotonic() - started
    # Three failures in a row (waiting 0.05 s, then 0.1 s in between), then it gives up.
    assert len(discord_.requests) == 3 and report.failed == 3 and report.aborted
    assert elapsed >= 0.15


async def test_requests_are_paced(sessions: Any) -> None:
    discord_ = FakeDiscordState()
    for _ in range(3):
        _, message_id = await genre_message(sessions)
        discord_.toggle(message_id, 7, "👍")
    bot = FakeBot(sessions, discord_)
    await reconciler(bot, VotingCog(bot), requests_per_s=20.0).run_once()  # type: ignore[arg-type]
    starts = [r[3] for r in discord_.requests]
    assert len(starts) == 6  # per message: the message, then the users of its one reaction
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 0.045


async def test_pace_spaces_calls_and_never_bunches_up_after_a_pause() -> None:
    pace = Pace(per_s=50.0)
    starts = []
    for _ in range(4):
        await pace.wait()
        starts.append(time.monotonic())
    await asyncio.sleep(0.1)  # idle: no credit is saved up for a burst
    for _ in range(2):
        await pace.wait()
        starts.append(time.monotonic())
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 0.018
    with pytest.raises(ValueError, match="must be > 0"):
        Pace(per_s=0)


async def test_the_sweeper_also_releases_what_turns_stale_after_the_start(
    sessions: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A process restarted at once finds the reservation it left still fresh: a later sweep
    releases it."""
    [r] = await reserve_generations(
        sessions,
        ["left behind"],
        guild_id=GUILD,
        channel_id=CHANNEL,
        user_id=3,
        model_name="m",
        model_version_id=None,
        options={},
    )
    caplog.set_level(logging.INFO, logger="bot.reconcile")
    sweeper = ReservationSweeper(sessions, stale_after=timedelta(seconds=0.3), interval_s=0.1)
    await sweeper.start()
    try:
        async with sessions.begin() as session:
            assert await session.get(Generation, r.generation_id) is not None  # fresh: kept
        for _ in range(50):
            await asyncio.sleep(0.05)
            async with sessions.begin() as session:
                if await session.get(Generation, r.generation_id) is None:
                    break
        else:
            pytest.fail("the stale reservation was never released")
    finally:
        await sweeper.close()
    assert "released 1 genres reserved but never posted" in caplog.text
    assert "left behind" in caplog.text
