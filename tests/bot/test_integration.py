"""The real, unmodified discord.py client against the fake Discord.

`/genre new` end to end, votes and favorites (duplicates, switching, removal, bot reactions),
the leaderboard order, admin checks, cooldowns, busy answers, restarts without data loss.
"""

from __future__ import annotations

import asyncio
import json
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bot.cli import entry
from bot.store.models import Favorite, Generation, Genre, TrainingRun, Vote
from bot.store.stats import store_stats
from tests.bot.fakes import ScriptedGenerator, make_config, running_bot
from tests.fake_discord import FakeDiscord
from tests.fake_discord.server import ALL_PERMISSIONS, MANAGE_GUILD, MEMBER_PERMISSIONS

pytestmark = pytest.mark.timeout(60)


def genre_message_ids(fake: FakeDiscord, interaction: Any) -> list[int]:
    return [int(m["id"]) for m in fake.followups(interaction) if not m.get("_ephemeral")]


async def new_genres(fake: FakeDiscord, user: Any, count: int, **options: Any) -> list[int]:
    interaction = await fake.invoke(user, "genre", "new", {"count": count, **options})
    await fake.wait_for(lambda: len(genre_message_ids(fake, interaction)) == count)
    ids = genre_message_ids(fake, interaction)
    # Wait for the 3 reactions on the last message: the command handler has finished.
    await fake.wait_for(lambda: len(fake.reactions.get(ids[-1], {})) == 3)
    return ids


def ephemeral_texts(fake: FakeDiscord, interaction: Any) -> list[str]:
    """Contents of the ephemeral replies and follow-ups of ``interaction``."""
    texts = []
    for c in fake.calls:
        if c.method != "POST" or interaction.token not in c.path or not isinstance(c.json, dict):
            continue
        body = c.json.get("data") if "data" in c.json else c.json
        if body and int(body.get("flags") or 0) & 64 and body.get("content"):
            texts.append(str(body["content"]))
    return texts


async def test_genre_new_end_to_end(
    fake_discord: FakeDiscord, sessions: Any, tmp_path: Path
) -> None:
    gen = ScriptedGenerator()
    gen.enqueue(["glitch polka", "finnish doom jazz", "harbour shoegaze"])
    gen.positions = [2, 1, 0]
    async with running_bot(make_config(tmp_path), sessions, gen):
        alice = fake_discord.member("alice")
        inter = await fake_discord.invoke(
            alice, "genre", "new", {"count": 3, "like": "Shoegaze", "weirdness": 4}
        )
        ids = await fake_discord.wait_for(
            lambda: (
                len(genre_message_ids(fake_discord, inter)) == 3
                and genre_message_ids(fake_discord, inter)
            )
        )
        await fake_discord.wait_for(
            lambda: len(fake_discord.calls_matching("PUT", "/reactions/")) == 9
        )

    # Deferred (type 5) first, within a second of the interaction.
    callback = fake_discord.calls_matching("POST", f"/interactions/{inter.id}/")[0]
    assert callback.json == {"type": 5}
    assert callback.at - inter.sent_at < 1.0
    # One message per genre, in order, each with 👍 👎 ⭐ added by the bot.
    contents = [m["content"] for m in fake_discord.followups(inter)]
    assert contents == [
        "🎵 **glitch polka**",
        "🎵 **finnish doom jazz**",
        "🎵 **harbour shoegaze**",
    ]
    for mid in ids:
        assert set(fake_discord.reactions[mid]) == {"👍", "👎", "⭐"}
    # The placeholder became the header (after showing the queue position).
    original = fake_discord.original(inter)
    assert original is not None and "3 new micro-genres" in original["content"]
    edits = [
        c.json["content"]
        for c in fake_discord.calls_matching("PATCH", "/messages/@original")
        if c.json and "content" in c.json
    ]
    assert any("number 2 in line" in e for e in edits)
    # The generator got the options; weirdness 4 is a plausibility band, not a temperature.
    assert gen.calls[0]["like"] == "shoegaze" and gen.calls[0]["weirdness"] == 4
    async with sessions.begin() as s:
        rows = (
            await s.execute(
                select(Genre.display_name, Generation).join(Generation).order_by(Generation.id)
            )
        ).all()
    assert [r[0] for r in rows] == ["glitch polka", "finnish doom jazz", "harbour shoegaze"]
    for (_, g), mid in zip(rows, ids, strict=True):
        assert g.message_id == mid and g.guild_id == fake_discord.guild_id
        assert g.channel_id == fake_discord.channel_id and g.user_id == alice.id
        assert g.model_name == "scripted-v1"
        assert g.options == {"count": 3, "like": "shoegaze", "weirdness": 4}


async def test_votes_favorites_and_leaderboard(
    fake_discord: FakeDiscord,
    sessions: Any,
    sqlite_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gen = ScriptedGenerator()
    gen.enqueue(["alpha wave polka", "beta drone", "gamma twee"])
    async with running_bot(make_config(tmp_path), sessions, gen) as running:
        users = [fake_discord.member(n) for n in ("ann", "ben", "cat")]
        alpha, beta, gamma = await new_genres(fake_discord, users[0], 3)
        ann, ben, cat = users
        # beta: +3 (cat first downvotes, then switches to 👍); alpha: +1 -1 = 0 → then +1;
        # gamma: -2.
        await fake_discord.react(ann, beta, "👍")
        await fake_discord.react(ann, beta, "👍")  # duplicate event
        await fake_discord.react(ben, beta, "👍")
        await fake_discord.react(cat, beta, "👎")
        await fake_discord.react(cat, beta, "👍")  # switch: counts once, as +1
        await fake_discord.react(cat, beta, "👎", add=False)  # removing the old 👎 keeps the 👍
        await fake_discord.react(ann, alpha, "👍")
        await fake_discord.react(ben, alpha, "👎")
        await fake_discord.react(ben, alpha, "👎", add=False)  # removal counted
        await fake_discord.react(ann, gamma, "👎")
        await fake_discord.react(ben, gamma, "👎")
        await fake_discord.react(ann, gamma, "⭐")
        await fake_discord.react(ann, gamma, "⭐")  # duplicate favorite
        await fake_discord.react(ben, beta, "⭐")
        await fake_discord.react(ben, beta, "⭐", add=False)
        await fake_discord.react(cat, alpha, "⭐")
        robot = fake_discord.member("robot", bot=True)
        await fake_discord.react(robot, gamma, "👍")  # bots never count
        await fake_discord.react(ann, gamma, "🎸")  # other emoji ignored
        # A reaction on a message that is not a genre message is ignored.
        await fake_discord.react(ann, 123456789, "👍")

        async def settled() -> None:
            # Gateway events are processed in order: a sentinel interaction answered after
            # them proves they were all handled.
            sentinel = await fake_discord.invoke(ann, "genre", "top", {"period": "all"})
            await fake_discord.wait_for(lambda: fake_discord.original(sentinel) is not None)
            await asyncio.sleep(0.2)

        await settled()
        inter = await fake_discord.invoke(ann, "genre", "top", {"period": "all"})
        await fake_discord.wait_for(lambda: fake_discord.original(inter) is not None)
        top = fake_discord.original(inter)
        assert top is not None
        board = top["embeds"][0]["description"].splitlines()
        assert [line.split("[")[1].split("]")[0] for line in board] == [
            "beta drone",
            "alpha wave polka",
            "gamma twee",
        ]
        assert "**+3** (3👍 0👎 0⭐)" in board[0]
        assert "**+1** (1👍 0👎 1⭐)" in board[1]
        assert "**-2** (0👍 2👎 1⭐)" in board[2]

        fav = await fake_discord.invoke(cat, "genre", "favorites", {})
        await fake_discord.wait_for(lambda: fake_discord.original(fav) is not None)
        favs = fake_discord.original(fav)
        assert favs is not None and favs["_ephemeral"]
        assert "alpha wave polka" in favs["embeds"][0]["description"]
        assert "gamma twee" not in favs["embeds"][0]["description"]
        assert running.bot.user is not None

    async with sessions.begin() as s:
        votes = (await s.execute(select(Vote.user_id, Vote.value))).all()
        favorites = (await s.execute(select(Favorite.user_id))).all()
    assert len(votes) == 6 and robot.id not in {v[0] for v in votes}
    assert fake_discord.bot_user.id not in {v[0] for v in votes}
    assert len(favorites) == 2
    # `microgenre stats --json` counts the same.
    monkeypatch.setenv("MICROGENRE_DATABASE_URL", sqlite_url)
    code = await asyncio.to_thread(entry, ["stats", "--json"])
    assert code == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["votes"] == 6 and stats["favorites"] == 2 and stats["generated_genres"] == 3


async def test_restart_keeps_votes_and_never_reissues(
    fake_discord: FakeDiscord, sessions: Any, tmp_path: Path
) -> None:
    config = make_config(tmp_path)
    gen = ScriptedGenerator()
    gen.enqueue(["velvet sludge", "tidal house"])
    ann = fake_discord.member("ann")
    async with running_bot(config, sessions, gen):
        first, second = await new_genres(fake_discord, ann, 2)
        await fake_discord.react(ann, first, "👍")
        await fake_discord.react(ann, second, "⭐")
        await fake_discord.wait_for(lambda: True)
        await asyncio.sleep(0.3)
    syncs_before = len(fake_discord.calls_matching("PUT", "/commands"))

    gen2 = ScriptedGenerator()
    # The first name was issued here before the restart: it must be skipped.
    gen2.enqueue(["velvet sludge", "moss trap"])
    async with running_bot(config, sessions, gen2):
        # Votes on pre-restart messages still count after the restart.
        bob = fake_discord.member("bob")
        await fake_discord.react(bob, first, "👍")
        [third] = await new_genres(fake_discord, bob, 1)
        assert "moss trap" in fake_discord.messages[third]["content"]
        assert any("velvet sludge" in {*c["exclude"]} for c in gen2.calls)
        inter = await fake_discord.invoke(bob, "genre", "top", {"period": "all"})
        await fake_discord.wait_for(lambda: fake_discord.original(inter) is not None)
        top = fake_discord.original(inter)
        assert top is not None
        assert "velvet sludge" in top["embeds"][0]["description"].splitlines()[0]
        assert "**+2**" in top["embeds"][0]["description"].splitlines()[0]
    # The commands did not change: no second sync.
    assert len(fake_discord.calls_matching("PUT", "/commands")) == syncs_before == 1
    stats = await store_stats(sessions)
    assert stats["votes"] == 2 and stats["favorites"] == 1 and stats["generated_genres"] == 3


async def test_cooldown_per_user(fake_discord: FakeDiscord, sessions: Any, tmp_path: Path) -> None:
    gen = ScriptedGenerator()
    gen.enqueue(["one", "two", "three"])
    async with running_bot(make_config(tmp_path, cooldown_s=60.0), sessions, gen):
        ann, ben = fake_discord.member("ann"), fake_discord.member("ben")
        await new_genres(fake_discord, ann, 1)
        again = await fake_discord.invoke(ann, "genre", "new", {"count": 1})
        await fake_discord.wait_for(lambda: fake_discord.original(again) is not None)
        reply = fake_discord.original(again)
        assert reply is not None and reply["_ephemeral"]
        assert "try again in" in reply["content"]
        await new_genres(fake_discord, ben, 1)  # another user is not affected
    assert len(gen.calls) == 2


async def test_retrain_refused_for_non_admin_even_without_default_permissions(
    fake_discord: FakeDiscord, sessions: Any, tmp_path: Path
) -> None:
    async with running_bot(make_config(tmp_path), sessions, ScriptedGenerator()):
        # Discord would hide /retrain from members (default_member_permissions = Manage
        # Server); the fake delivers it anyway, as when a guild admin overrides the default.
        synced = fake_discord.commands["global"]
        retrain = next(c for c in synced if c["name"] == "retrain")
        assert int(retrain["default_member_permissions"]) == MANAGE_GUILD
        mallory = fake_discord.member("mallory")
        for sub in ("start", "cancel", "status"):
            inter = await fake_discord.invoke(
                mallory, "retrain", sub, permissions=MEMBER_PERMISSIONS
            )
            reply = await fake_discord.wait_for(partial(fake_discord.original, inter))
            assert reply is not None and reply["_ephemeral"]
            assert "Manage Server" in reply["content"]
    async with sessions.begin() as s:
        assert (await s.execute(select(TrainingRun))).first() is None


async def test_fifty_concurrent_requests_in_one_guild(
    fake_discord: FakeDiscord, sessions: Any, tmp_path: Path
) -> None:
    gen = ScriptedGenerator()
    gen.delay_s = 0.5
    names = [f"genre number {i}" for i in range(60)]
    gen.enqueue(names + names)  # duplicates offered: must never be issued twice
    config = make_config(tmp_path, generation_slots=8)
    async with running_bot(config, sessions, gen):
        users = [fake_discord.member(f"user{i}") for i in range(50)]
        interactions = await asyncio.gather(
            *(fake_discord.invoke(u, "genre", "new", {"count": 1}) for u in users)
        )
        start = time.monotonic()

        def all_deferred() -> bool:
            return all(fake_discord.originals.get(i.token) for i in interactions)

        await fake_discord.wait_for(all_deferred, within=10)
        deferred_at = [
            fake_discord.calls_matching("POST", f"/interactions/{i.id}/")[0].at
            for i in interactions
        ]
        assert max(deferred_at) - start < 3.0

        def answered(i: Any) -> bool:
            original = fake_discord.original(i)
            return bool(
                genre_message_ids(fake_discord, i)
                or (original and original.get("_deleted") and ephemeral_texts(fake_discord, i))
            )

        await fake_discord.wait_for(lambda: all(answered(i) for i in interactions), within=30)
        issued = [
            fake_discord.messages[mid]["content"]
            for i in interactions
            for mid in genre_message_ids(fake_discord, i)
        ]
        assert len(issued) == len(set(issued))  # no genre issued twice
        # Nobody is turned away: the ones beyond the 8 slots waited in line.
        assert len(issued) == 50
        waited = [
            i
            for i in interactions
            if any(
                "in line" in str((c.json or {}).get("content", ""))
                for c in fake_discord.calls_matching("PATCH", f"/{i.token}/messages/@original")
            )
        ]
        assert waited


async def test_busy_worker_and_missing_reaction_permission(
    fake_discord: FakeDiscord, sessions: Any, tmp_path: Path
) -> None:
    from model.worker.errors import WorkerBusyError

    gen = ScriptedGenerator()
    gen.error = WorkerBusyError(12.0)
    async with running_bot(make_config(tmp_path), sessions, gen):
        ann = fake_discord.member("ann")
        inter = await fake_discord.invoke(ann, "genre", "new", {"count": 1})
        await fake_discord.wait_for(lambda: ephemeral_texts(fake_discord, inter))
        original = fake_discord.original(inter)
        assert original is not None and original.get("_deleted")
        [text] = ephemeral_texts(fake_discord, inter)
        assert text.startswith("⚠️") and str(gen.error) in text
        assert "Traceback" not in text

        gen.error = None
        gen.enqueue(["quiet storm metal"])
        fake_discord.no_reactions_in.add(fake_discord.channel_id)
        inter = await fake_discord.invoke(ann, "genre", "new", {"count": 1})
        await fake_discord.wait_for(lambda: ephemeral_texts(fake_discord, inter))
        [note] = ephemeral_texts(fake_discord, inter)
        assert "cannot add reactions" in note
        assert len(genre_message_ids(fake_discord, inter)) == 1


async def test_check_stats_and_map(
    fake_discord: FakeDiscord, sessions: Any, tmp_path: Path
) -> None:
    from bot.store.genres import import_records
    from scraping.records import GenreRecord

    await import_records(
        sessions,
        [
            GenreRecord.create("polka", "everynoise", extra={"x": 100, "y": 200}),
            GenreRecord.create("finnish metal", "everynoise", extra={"x": 900, "y": 300}),
            GenreRecord.create("shoegaze", "wikipedia"),
        ],
    )
    gen = ScriptedGenerator()
    gen.enqueue(["shoegaze", "finnish polka", "zzyzx"])
    async with running_bot(make_config(tmp_path), sessions, gen):
        ann = fake_discord.member("ann")
        inter = await fake_discord.invoke(ann, "genre", "new", {"count": 2})
        # "shoegaze" is real: never delivered.
        await fake_discord.wait_for(lambda: len(genre_message_ids(fake_discord, inter)) == 2)
        contents = [m["content"] for m in fake_discord.followups(inter)]
        assert contents == ["🎵 **finnish polka**", "🎵 **zzyzx**"]

        async def answer(sub: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
            i = await fake_discord.invoke(ann, "genre", sub, options or {})

            def done() -> Any:
                o = fake_discord.original(i)
                if o and (o["content"] or o["embeds"]) and not o.get("_deferred"):
                    return o
                posted = [m for m in fake_discord.followups(i)]
                return posted[-1] if posted else None

            result: dict[str, Any] = await fake_discord.wait_for(done)
            return result

        real = await answer("check", {"name": "Shoegaze"})
        assert "is a real genre" in real["content"] and "wikipedia" in real["content"]
        invented = await answer("check", {"name": "Finnish  Polka"})
        assert "invented here" in invented["content"] and f"<@{ann.id}>" in invented["content"]
        unknown = await answer("check", {"name": "nothing like it"})
        assert "not a genre I know" in unknown["content"]

        stats = await answer("stats")
        fields = {f["name"]: f["value"] for f in stats["embeds"][0]["fields"]}
        assert fields["This server"].startswith("2 genres")
        assert "ready" in fields["Generator"]

        shown = await answer("map")
        assert shown["attachments"][0]["filename"] == "genre-map.png"
        assert "1 invented genres placed" in shown["content"]
        assert "1 share no word" in shown["content"]


async def test_admin_retrain_permissions_pass_with_manage_guild(
    fake_discord: FakeDiscord, sessions: Any, tmp_path: Path
) -> None:
    async with running_bot(make_config(tmp_path), sessions, ScriptedGenerator()):
        admin = fake_discord.member("admin")
        inter = await fake_discord.invoke(
            admin, "retrain", "status", permissions=MEMBER_PERMISSIONS | MANAGE_GUILD
        )
        await fake_discord.wait_for(lambda: fake_discord.original(inter) is not None)
        reply = fake_discord.original(inter)
        assert reply is not None and "No retraining has run in this server yet" in reply["content"]
        owner = fake_discord.member("owner")
        inter = await fake_discord.invoke(owner, "retrain", "cancel", permissions=ALL_PERMISSIONS)
        await fake_discord.wait_for(lambda: fake_discord.original(inter) is not None)
        reply = fake_discord.original(inter)
        assert reply is not None and "no retraining run queued or in progress" in reply["content"]
