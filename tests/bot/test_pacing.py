"""The reaction pacer: per-channel and global pacing, bounded queues, errors never escape,
lanes end when idle, a clean close."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import defaultdict
from typing import Any
from unittest.mock import MagicMock

import discord
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.pacing import GlobalPace, MessagePacer, ReactionJob, ReactionPacer

pytestmark = pytest.mark.timeout(60)


def http_error(kind: type[discord.HTTPException], status: int) -> discord.HTTPException:
    return kind(MagicMock(status=status, reason="x"), {"message": "x", "code": 0})


class Recorder:
    """An ``add`` that records (time, channel, message, emoji) and fails on request."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, int, int, str]] = []
        self.failures: dict[tuple[int, str], BaseException] = {}
        self.delay_s = 0.0

    async def __call__(self, channel_id: int, message_id: int, emoji: str) -> None:
        self.calls.append((asyncio.get_running_loop().time(), channel_id, message_id, emoji))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        failure = self.failures.get((message_id, emoji))
        if failure is not None:
            raise failure

    def times(self, channel_id: int) -> list[float]:
        return [t for t, c, _, _ in self.calls if c == channel_id]


async def drained(pacer: ReactionPacer, within: float = 10.0) -> None:
    await asyncio.wait_for(pacer.join(), within)


async def test_paced_per_channel_and_channels_in_parallel() -> None:
    add = Recorder()
    pacer = ReactionPacer(add, per_channel_per_s=20, global_per_s=1000)
    start = asyncio.get_running_loop().time()
    for message in (1, 2):
        for channel in (10, 20):
            assert pacer.submit(ReactionJob(channel, message * channel, ("a", "b", "c")))
    assert pacer.pending == 12 and pacer.active_channels == 2
    await drained(pacer)
    for channel in (10, 20):
        times = add.times(channel)
        assert len(times) == 6
        assert all(b - a >= 0.05 * 0.95 for a, b in itertools.pairwise(times))
        # In order: the first message's reactions, then the second's.
        assert [(m, e) for _, c, m, e in add.calls if c == channel] == [
            (channel, "a"),
            (channel, "b"),
            (channel, "c"),
            (2 * channel, "a"),
            (2 * channel, "b"),
            (2 * channel, "c"),
        ]
    # The two channels ran side by side: about 5 intervals, not 11.
    assert max(t for t, *_ in add.calls) - start < 0.05 * 9
    assert pacer.added == 12 and pacer.pending == 0 and pacer.active_channels == 0


async def test_global_pace_across_channels() -> None:
    add = Recorder()
    pacer = ReactionPacer(add, per_channel_per_s=1000, global_per_s=25)
    for channel in range(5):
        pacer.submit(ReactionJob(channel, channel, ("a", "b")))
    await drained(pacer)
    times = sorted(t for t, *_ in add.calls)
    assert len(times) == 10
    assert all(b - a >= 0.04 * 0.95 for a, b in itertools.pairwise(times))


async def test_bounded_queue_drops_whole_jobs(caplog: pytest.LogCaptureFixture) -> None:
    add = Recorder()
    pacer = ReactionPacer(add, per_channel_per_s=1000, max_pending_per_channel=4)
    assert pacer.submit(ReactionJob(1, 100, ("a", "b", "c")))
    with caplog.at_level(logging.WARNING, logger="bot.pacing"):
        assert not pacer.submit(ReactionJob(1, 101, ("a", "b", "c")))
    assert "queue full" in caplog.text
    assert pacer.submit(ReactionJob(2, 102, ("a", "b", "c")))  # another channel has room
    await drained(pacer)
    assert {m for _, _, m, _ in add.calls} == {100, 102}
    assert pacer.dropped == 3 and pacer.added == 6


@pytest.mark.parametrize(
    "error",
    [
        http_error(discord.HTTPException, 429),
        http_error(discord.DiscordServerError, 503),
        discord.RateLimited(12.0),
        OSError("connection reset"),
    ],
    ids=["429", "503", "rate-limited", "oserror"],
)
async def test_a_failed_reaction_is_logged_and_the_rest_continue(
    error: BaseException, caplog: pytest.LogCaptureFixture
) -> None:
    add = Recorder()
    add.failures[(100, "b")] = error
    pacer = ReactionPacer(add, per_channel_per_s=1000)
    with caplog.at_level(logging.WARNING, logger="bot.pacing"):
        pacer.submit(ReactionJob(1, 100, ("a", "b", "c")))
        pacer.submit(ReactionJob(1, 101, ("a",)))
        await drained(pacer)
    assert [(m, e) for _, _, m, e in add.calls] == [(100, "a"), (100, "b"), (100, "c"), (101, "a")]
    assert pacer.added == 3 and pacer.failed == 1
    assert "could not add b to message 100" in caplog.text


async def test_a_deleted_message_drops_only_its_own_reactions() -> None:
    add = Recorder()
    add.failures[(100, "a")] = http_error(discord.NotFound, 404)
    pacer = ReactionPacer(add, per_channel_per_s=1000)
    pacer.submit(ReactionJob(1, 100, ("a", "b", "c")))
    pacer.submit(ReactionJob(1, 101, ("a", "b")))
    await drained(pacer)
    assert [(m, e) for _, _, m, e in add.calls] == [(100, "a"), (101, "a"), (101, "b")]
    assert pacer.dropped == 2


async def test_forbidden_drops_the_channel_and_tells_each_job_once() -> None:
    add = Recorder()
    add.failures[(100, "a")] = http_error(discord.Forbidden, 403)
    told: list[str] = []

    def teller(name: str) -> Any:
        async def tell() -> None:
            told.append(name)

        return tell

    async def broken() -> None:
        raise RuntimeError("the note could not be sent")

    pacer = ReactionPacer(add, per_channel_per_s=1000)
    pacer.submit(ReactionJob(1, 100, ("a", "b"), teller("first")))
    pacer.submit(ReactionJob(1, 101, ("a", "b"), broken))  # its failure is only logged
    pacer.submit(ReactionJob(1, 102, ("a",), teller("third")))
    pacer.submit(ReactionJob(2, 200, ("a", "b"), teller("elsewhere")))
    await drained(pacer)
    assert told == ["first", "third"]
    assert [(m, e) for _, c, m, e in add.calls if c == 1] == [(100, "a")]
    assert [(m, e) for _, c, m, e in add.calls if c == 2] == [(200, "a"), (200, "b")]
    assert pacer.failed == 1 and pacer.dropped == 4


async def test_close_drains_then_cancels_and_refuses_new_work() -> None:
    add = Recorder()
    pacer = ReactionPacer(add, per_channel_per_s=1000)
    pacer.submit(ReactionJob(1, 100, ("a", "b")))
    await pacer.close(grace_s=1.0)
    assert pacer.added == 2 and pacer.active_channels == 0

    slow = Recorder()
    slow.delay_s = 5.0
    pacer = ReactionPacer(slow, per_channel_per_s=1000)
    pacer.submit(ReactionJob(1, 100, ("a", "b", "c")))
    await asyncio.sleep(0.01)
    await pacer.close(grace_s=0.05)
    assert pacer.active_channels == 0 and pacer.added == 0
    assert pacer.dropped == 2  # "a" was in flight when cancelled
    assert not pacer.submit(ReactionJob(1, 101, ("a",)))


async def test_a_lane_restarted_right_after_idling_keeps_the_pace() -> None:
    add = Recorder()
    pacer = ReactionPacer(add, per_channel_per_s=10, global_per_s=1000)
    pacer.submit(ReactionJob(1, 100, ("a",)))
    await asyncio.sleep(0.01)
    pacer.submit(ReactionJob(1, 101, ("a",)))  # while the lane lingers
    await drained(pacer)
    first, second = add.times(1)
    assert second - first >= 0.1 * 0.95


jobs = st.lists(
    st.tuples(
        st.integers(0, 2),  # channel
        st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3, unique=True),
        st.sampled_from([None, "http", "notfound", "forbidden"]),  # the first emoji's fate
    ),
    max_size=12,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(jobs=jobs)
def test_every_reaction_is_accounted_for_and_order_is_kept(
    jobs: list[tuple[int, list[str], str | None]],
) -> None:
    errors = {
        "http": http_error(discord.HTTPException, 429),
        "notfound": http_error(discord.NotFound, 404),
        "forbidden": http_error(discord.Forbidden, 403),
    }

    async def scenario() -> None:
        add = Recorder()
        pacer = ReactionPacer(add, per_channel_per_s=1e6, global_per_s=1e6)
        submitted: dict[int, list[tuple[int, str]]] = defaultdict(list)
        for message, (channel, emojis, fate) in enumerate(jobs):
            if fate is not None:
                add.failures[(message, emojis[0])] = errors[fate]
            pacer.submit(ReactionJob(channel, message, tuple(emojis)))
            submitted[channel].extend((message, e) for e in emojis)
            await asyncio.sleep(0)
        await drained(pacer)
        total = sum(len(e) for _, e, _ in jobs)
        assert pacer.added + pacer.failed + pacer.dropped == total
        assert pacer.pending == 0 and pacer.active_channels == 0
        for channel, expected in submitted.items():
            attempted = [(m, e) for _, c, m, e in add.calls if c == channel]
            # Attempts are a subsequence of the submissions, in the same order.
            it = iter(expected)
            assert all(item in it for item in attempted)

    asyncio.run(scenario())


async def test_message_turns_keep_each_channels_window_and_are_forgotten() -> None:
    """7 sends in one channel and 2 in another, at once: never more than 3 per 0.3 s (+margin)
    in a channel, the other channel never waits for the first, and no state is left after."""
    pacer = MessagePacer(per_window=3, window_s=0.3, margin_s=0.02)
    loop = asyncio.get_running_loop()
    sent: dict[int, list[float]] = defaultdict(list)

    async def send(channel_id: int) -> None:
        async with pacer.turn(channel_id):
            sent[channel_id].append(loop.time())
            await asyncio.sleep(0.01)

    start = loop.time()
    await asyncio.gather(*(send(1) for _ in range(7)), *(send(2) for _ in range(2)))
    for times in sent.values():
        for i in range(len(times) - 3):
            assert times[i + 3] - times[i] >= 0.32 - 1e-3
    assert len(sent[1]) == 7 and max(sent[2]) - start < 0.1
    await asyncio.sleep(0.35)
    async with pacer.turn(3):
        pass
    assert pacer.channels == 1  # only the channel just used


@pytest.mark.parametrize("kwargs", [{"per_window": 0}, {"window_s": 0}, {"margin_s": -1}])
def test_message_pacer_rejects_bad_limits(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        MessagePacer(**kwargs)  # type: ignore[arg-type]


async def test_reactions_and_messages_share_one_global_pace() -> None:
    """Reactions in 4 channels and message turns in 4 others, sharing a GlobalPace of 50/s:
    all calls together keep 1/50 s apart (Discord's global limit counts both)."""
    pace = GlobalPace(per_s=50.0)
    add = Recorder()
    reactions = ReactionPacer(add, per_channel_per_s=1000, global_pace=pace)
    messages = MessagePacer(per_window=100, window_s=1.0, global_pace=pace)
    loop = asyncio.get_running_loop()
    sent: list[float] = []

    async def send(channel_id: int) -> None:
        async with messages.turn(channel_id):
            sent.append(loop.time())

    for channel in (1, 2, 3, 4):
        assert reactions.submit(ReactionJob(channel, channel, ("a", "b", "c", "d", "e")))
    await asyncio.gather(*(send(10 + i % 4) for i in range(20)), drained(reactions))
    times = sorted([t for t, *_ in add.calls] + sent)
    assert len(times) == 40
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.02 - 2e-3
