"""The buttons under genre messages and `/genre blend`, with the real discord.py against the
fake Discord: a click is a type-3 interaction, deferred in time, served through the fair queue,
answered with replies (or privately, when it cannot be served)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from bot.retrain.data import write_votes_file
from bot.store.models import Generation, Genre, utcnow
from model.dataset import read_votes
from tests.bot.fakes import ScriptedGenerator, make_config, running_bot
from tests.bot.test_integration import ephemeral_texts, new_genres
from tests.fake_discord import FakeDiscord
from tests.fake_discord.components import custom_ids

pytestmark = pytest.mark.timeout(60)


def buttons(fake: FakeDiscord, message_id: int) -> list[str]:
    return custom_ids(fake.messages[message_id].get("components"))


async def generation_id(sessions: Any, message_id: int) -> int:
    async with sessions.begin() as s:
        found = await s.scalar(select(Generation.id).where(Generation.message_id == message_id))
    assert found is not None
    return int(found)


async def replies(fake: FakeDiscord, source: int, count: int) -> list[int]:
    """Wait for ``count`` replies to ``source`` and their 3 reactions each."""
    ids = await fake.wait_for(
        lambda: len(fake.replies_to(source)) >= count and fake.replies_to(source)
    )
    await fake.wait_for(lambda: all(len(fake.reactions.get(m, {})) == 3 for m in ids))
    return list(ids)


async def lineage_of(sessions: Any, message_id: int) -> tuple[Any, ...]:
    async with sessions.begin() as s:
        row = (
            await s.execute(
                select(
                    Generation.lineage_kind,
                    Generation.lineage_parent_id,
                    Generation.lineage_text,
                    Generation.options,
                ).where(Generation.message_id == message_id)
            )
        ).one()
    return tuple(row)


async def test_more_like_this_and_weirder(
    fake_discord: FakeDiscord, sessions: Any, tmp_path: Path
) -> None:
    gen = ScriptedGenerator()
    gen.enqueue(["bubblegrunge", "bubblegrunge revival", "neon bubblegrunge", "bubble sludge"])
    gen.enqueue(["hyper bubblegrunge"])
    ann, ben = fake_discord.member("ann"), fake_discord.member("ben")
    async with running_bot(make_config(tmp_path), sessions, gen):
        [source] = await new_genres(fake_discord, ann, 1, weirdness=3)
        gid = await generation_id(sessions, source)
        assert buttons(fake_discord, source) == [f"mg:more:{gid}", f"mg:weirder:{gid}"]

        click = await fake_discord.click(ben, source, f"mg:more:{gid}")
        variations = await replies(fake_discord, source, 3)
        assert len(variations) == 3
        # Deferred (a deferred update: the genre message stays as it is) within a second.
        callback = fake_discord.calls_matching("POST", f"/interactions/{click.id}/")[0]
        assert callback.json == {"type": 6} and callback.at - click.sent_at < 1.0
        assert fake_discord.messages[source]["content"] == "🎵 **bubblegrunge**"
        contents = [fake_discord.messages[m]["content"] for m in variations]
        assert contents == [
            "🎵 **bubblegrunge revival**",
            "🎵 **neon bubblegrunge**",
            "🎵 **bubble sludge**",
        ]
        for mid in variations:  # each its own reactions and buttons
            assert set(fake_discord.reactions[mid]) == {"👍", "👎", "⭐"}
            assert buttons(fake_discord, mid) == [
                f"mg:more:{await generation_id(sessions, mid)}",
                f"mg:weirder:{await generation_id(sessions, mid)}",
            ]
        # Conditioned on the source, at its weirdness; lineage recorded. The first variation
        # is asked for alone, then the other two (test_the_first_variation_is_posted_...).
        assert [c["count"] for c in gen.calls[1:]] == [1, 2]
        for call in gen.calls[1:]:
            assert call["like"] == "bubblegrunge" and call["weirdness"] == 3
        for mid, count in zip(variations, (1, 2, 2), strict=True):
            kind, parent, text, options = await lineage_of(sessions, mid)
            assert (kind, parent, text) == ("variation", gid, "bubblegrunge")
            assert options == {"count": count, "like": "bubblegrunge", "weirdness": 3}
        assert ephemeral_texts(fake_discord, click) == []

        # Weirder: one variation two bands up (3 -> 5).
        weird = await fake_discord.click(ben, source, f"mg:weirder:{gid}")
        [_, _, _, weirder] = await replies(fake_discord, source, 4)
        assert gen.calls[3]["weirdness"] == 5 and gen.calls[3]["like"] == "bubblegrunge"
        assert (await lineage_of(sessions, weirder))[:3] == ("weirder", gid, "bubblegrunge")
        assert weird.ack_latency is not None and weird.ack_latency < 3.0

        # A vote on a variation reaches the server's votes file with its condition.
        await fake_discord.react(ann, variations[0], "👍")
        await fake_discord.wait_for(lambda: True)
        await asyncio.sleep(0.3)
    path = tmp_path / "votes.jsonl"
    await write_votes_file(sessions, fake_discord.guild_id, path)
    assert [(v.name, v.label, v.like) for v in read_votes(path)] == [
        ("bubblegrunge revival", "up", "bubblegrunge")
    ]


async def test_a_click_burst_on_one_genre_stays_within_the_channels_message_limit(
    fake_discord: FakeDiscord, sessions: Any, tmp_path: Path
) -> None:
    """Six users click "More like this" at once: 18 replies in one channel, whose limit is 5
    messages per 5 s. The bot paces its replies instead of meeting 429s."""
    gen = ScriptedGenerator()
    gen.enqueue(["bubblegrunge"])
    gen.enqueue([f"bubblegrunge {i}" for i in range(18)])
    ann = fake_discord.member("ann")
    clickers = [fake_discord.member(f"clicker{i}") for i in range(6)]
    async with running_bot(make_config(tmp_path), sessions, gen):
        [source] = await new_genres(fake_discord, ann, 1)
        gid = await generation_id(sessions, source)
        await asyncio.sleep(5.1)  # a fresh window for the channel's message limit
        clicks = await asyncio.gather(
            *(fake_discord.click(c, source, f"mg:more:{gid}") for c in clickers)
        )
        await fake_discord.wait_for(lambda: len(fake_discord.replies_to(source)) >= 18, within=40)
        assert all(c.ack_latency is not None and c.ack_latency < 3.0 for c in clicks)
    limited = [c for c in fake_discord.calls_matching("POST", "/messages") if c.status == 429]
    assert limited == []
    assert all(ephemeral_texts(fake_discord, c) == [] for c in clicks)


async def test_the_first_variation_is_posted_before_the_others_are_made(
    fake_discord: FakeDiscord, sessions: Any, tmp_path: Path
) -> None:
    """A click's first variation goes out as soon as it is made; the other two wait their turn
    in the fair queue behind everyone's first. In a burst every clicker sees a reply early,
    instead of the last ones waiting for all the others' three."""
    gen = ScriptedGenerator()
    gen.enqueue(["bubblegrunge", "bubblegrunge revival", "neon bubblegrunge", "bubble sludge"])
    ann, ben = fake_discord.member("ann"), fake_discord.member("ben")
    async with running_bot(make_config(tmp_path), sessions, gen):
        [source] = await new_genres(fake_discord, ann, 1, weirdness=3)
        gid = await generation_id(sessions, source)
        original = gen.generate
        later = asyncio.Event()
        held: list[int] = []

        async def second_part_waits(count: int, options: Any, **kwargs: Any) -> Any:
            if len(gen.calls) >= 2:  # after the source's and the first variation's calls
                held.append(count)
                await later.wait()
            return await original(count, options, **kwargs)

        gen.generate = second_part_waits  # type: ignore[method-assign]
        click = await fake_discord.click(ben, source, f"mg:more:{gid}")
        [first] = await replies(fake_discord, source, 1)
        assert fake_discord.messages[first]["content"] == "🎵 **bubblegrunge revival**"
        # Then the other two are asked for, through the queue again.
        await fake_discord.wait_for(lambda: held)
        assert [gen.calls[1]["count"], *held] == [1, 2]
        assert len(fake_discord.replies_to(source)) == 1
        later.set()
        variations = await replies(fake_discord, source, 3)
        contents = [fake_discord.messages[m]["content"] for m in variations]
        assert contents[1:] == ["🎵 **neon bubblegrunge**", "🎵 **bubble sludge**"]
        assert all(gen.calls[i]["like"] == "bubblegrunge" for i in (1, 2))
        assert ephemeral_texts(fake_discord, click) == []


async def test_weirder_is_capped_at_five_and_works_after_a_restart(
    fake_discord: FakeDiscord, sessions: Any, tmp_path: Path
) -> None:
    config = make_config(tmp_path)
    ann = fake_discord.member("ann")
    gen = ScriptedGenerator()
    gen.enqueue(["tidal waltz"])
    async with running_bot(config, sessions, gen):
        [source] = await new_genres(fake_discord, ann, 1, weirdness=4)
    gid = await generation_id(sessions, source)
    gen2 = ScriptedGenerator()  # a new process: nothing of the first one is left
    gen2.enqueue(["tidal waltz chant", "tidal waltz noise", "waltz of tides", "far tidal waltz"])
    async with running_bot(config, sessions, gen2):
        await fake_discord.click(ann, source, f"mg:weirder:{gid}")
        await replies(fake_discord, source, 1)
        assert gen2.calls[0]["weirdness"] == 5  # 4 + 2, capped
        await fake_discord.click(ann, source, f"mg:more:{gid}")
        assert len(await replies(fake_discord, source, 4)) == 4
        assert gen2.calls[1]["weirdness"] == 4


async def test_clicks_that_cannot_be_served_answer_privately(
    fake_discord: FakeDiscord, sessions: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    other_guild, other_channel = 1001, 2100
    fake_discord.add_guild(other_guild, other_channel)
    gen = ScriptedGenerator()
    gen.enqueue(["old moss", "fresh moss", "far moss", "moss of elsewhere"])
    ann = fake_discord.member("ann")
    async with running_bot(make_config(tmp_path, buttons_days=30), sessions, gen):
        old, fresh = await new_genres(fake_discord, ann, 2)
        old_id, fresh_id = [await generation_id(sessions, m) for m in (old, fresh)]
        async with sessions.begin() as s:
            await s.execute(
                update(Generation)
                .where(Generation.id == old_id)
                .values(created_at=utcnow() - timedelta(days=31))
            )

        async def answer(message_id: int, custom_id: str) -> str:
            click = await fake_discord.click(ann, message_id, custom_id)
            texts = await fake_discord.wait_for(lambda: ephemeral_texts(fake_discord, click))
            assert click.ack_latency is not None and click.ack_latency < 3.0
            return str(texts[0])

        assert "archived" in await answer(old, f"mg:more:{old_id}")
        # A message whose button names another generation (not this message's genre).
        forged = await post_with_button(fake_discord, f"mg:more:{fresh_id}")
        assert "does not belong to this genre's message" in await answer(
            forged, f"mg:more:{fresh_id}"
        )
        # A generation the store does not have.
        unknown = await post_with_button(fake_discord, "mg:weirder:999999")
        assert "no longer know this genre" in await answer(unknown, "mg:weirder:999999")
        # Another server's genre, clicked in this server.
        async with sessions.begin() as s:
            await s.execute(
                update(Generation).where(Generation.id == fresh_id).values(guild_id=other_guild)
            )
        assert "another server" in await answer(fresh, f"mg:more:{fresh_id}")
        async with sessions.begin() as s:
            await s.execute(
                update(Generation)
                .where(Generation.id == fresh_id)
                .values(guild_id=fake_discord.guild_id)
            )
        # The source message is deleted while its variations are generated.
        gen.gate = asyncio.Event()
        click = await fake_discord.click(ann, fresh, f"mg:more:{fresh_id}")
        await fake_discord.wait_for(lambda: click.acked_at is not None)
        fake_discord.delete_message(fresh)
        gen.gate.set()
        texts = await fake_discord.wait_for(lambda: ephemeral_texts(fake_discord, click))
        assert "deleted" in texts[0]
    assert not fake_discord.replies_to(old) and not fake_discord.replies_to(fresh)
    assert "unexpected error" not in caplog.text
    async with sessions.begin() as s:  # the unposted variations were released
        names = set((await s.scalars(select(Genre.name).join(Generation))).all())
    assert "far moss" not in names


async def post_with_button(fake: FakeDiscord, custom_id: str) -> int:
    """A message of the bot's carrying one button (as if posted long ago by hand)."""
    message_id = 7_000_000 + len(fake.messages)
    message = fake.message_payload(
        message_id,
        fake.channel_id,
        "🎵 **forged**",
        components=[{"type": 1, "components": [{"type": 2, "style": 2, "custom_id": custom_id}]}],
    )
    fake.messages[message_id] = message
    return message_id


async def test_a_click_on_a_full_queue_is_refused_with_the_estimate(
    fake_discord: FakeDiscord, sessions: Any, tmp_path: Path
) -> None:
    gen = ScriptedGenerator()
    gen.enqueue(["slow polka"])
    ann = fake_discord.member("ann")
    async with running_bot(make_config(tmp_path, user_queue_cap=1), sessions, gen):
        [source] = await new_genres(fake_discord, ann, 1)
        gid = await generation_id(sessions, source)
        gen.gate = asyncio.Event()
        gen.enqueue(["slow polka a", "slow polka b", "slow polka c", "slow polka d"])
        first = await fake_discord.click(ann, source, f"mg:more:{gid}")
        await fake_discord.wait_for(lambda: first.acked_at is not None)
        await asyncio.sleep(0.1)
        second = await fake_discord.click(ann, source, f"mg:weirder:{gid}")
        texts = await fake_discord.wait_for(lambda: ephemeral_texts(fake_discord, second))
        assert second.ack_latency is not None and second.ack_latency < 3.0
        assert "You already have 1 genre requests in line" in texts[0] and "about" in texts[0]
        gen.gate.set()
        assert len(await replies(fake_discord, source, 3)) == 3


async def test_blend_invents_children_of_both_parents(
    fake_discord: FakeDiscord, sessions: Any, tmp_path: Path
) -> None:
    gen = ScriptedGenerator()
    gen.enqueue(["polkagaze", "shoe polka"])
    ann = fake_discord.member("ann")
    async with running_bot(make_config(tmp_path), sessions, gen):
        inter = await fake_discord.invoke(
            ann, "genre", "blend", {"a": "Shoegaze", "b": " Finnish  Polka", "count": 2}
        )
        await fake_discord.wait_for(lambda: len(fake_discord.followups(inter)) == 2)
        header = fake_discord.original(inter)
        assert header is not None
        assert "blended from *shoegaze* and *finnish polka*" in header["content"]
        assert gen.calls[0]["like"] == "shoegaze | finnish polka"
        posted = [int(m["id"]) for m in fake_discord.followups(inter)]
        assert all(len(buttons(fake_discord, m)) == 2 for m in posted)
        assert (await lineage_of(sessions, posted[0]))[:3] == (
            "blend",
            None,
            "shoegaze | finnish polka",
        )
        check = await fake_discord.invoke(ann, "genre", "check", {"name": "polkagaze"})
        await fake_discord.wait_for(lambda: fake_discord.original(check) is not None)
        shown = fake_discord.original(check)
        assert (
            shown is not None and "blended from *shoegaze* and *finnish polka*" in shown["content"]
        )
        for a, b, problem in [
            ("dub", " DUB", "two different genres"),
            ("dub | jazz", "polka", "may not contain '|'"),
            ("x" * 60, "polka", "too long"),
        ]:
            bad = await fake_discord.invoke(ann, "genre", "blend", {"a": a, "b": b})
            texts = await fake_discord.wait_for(partial(ephemeral_texts, fake_discord, bad))
            assert problem in texts[0]
    assert len(gen.calls) == 1


async def test_top_filters_by_kind(
    fake_discord: FakeDiscord, sessions: Any, tmp_path: Path
) -> None:
    gen = ScriptedGenerator()
    gen.enqueue(["root drone", "root drone revival", "root drone wave", "drone roots"])
    ann = fake_discord.member("ann")
    async with running_bot(make_config(tmp_path), sessions, gen):
        [source] = await new_genres(fake_discord, ann, 1)
        gid = await generation_id(sessions, source)
        await fake_discord.click(ann, source, f"mg:more:{gid}")
        await replies(fake_discord, source, 3)
        inter = await fake_discord.invoke(
            ann, "genre", "top", {"period": "all", "kind": "variation"}
        )
        await fake_discord.wait_for(lambda: fake_discord.original(inter) is not None)
        top = fake_discord.original(inter)
        assert top is not None
        board = top["embeds"][0]["description"]
        assert "root drone revival" in board and "[root drone]" not in board
        assert "variations" in top["embeds"][0]["title"]
