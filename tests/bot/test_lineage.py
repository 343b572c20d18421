"""Lineage: how each genre was asked for, stored, shown by `/genre check`, filtered by
`/genre top kind:`, and carried into a server run's votes file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from bot.lineage import KINDS, Lineage
from bot.retrain.data import write_votes_file
from bot.service import GenreRequest, GenreService
from bot.store.generations import attach_message, lookup_genre, reserve_generations
from bot.store.leaderboard import top_generations
from bot.store.models import Generation
from bot.store.votes import set_vote
from model.dataset import read_votes
from tests.bot.fakes import ScriptedGenerator

GUILD = 1


async def deliver(service: GenreService, name: str, **request: Any) -> int:
    service.generator.enqueue([name])  # type: ignore[attr-defined]
    delivery = await service.deliver(GenreRequest(1, guild_id=GUILD, user_id=5, **request))
    [reserved] = delivery.reserved
    assert reserved.generation_id is not None
    gid = reserved.generation_id
    await attach_message(service.sessions, gid, message_id=10_000 + gid, channel_id=2)
    return gid


@pytest.mark.parametrize(
    ("lineage", "text"),
    [
        (Lineage("new"), None),
        (Lineage("like", text="shoegaze"), "asked for like *shoegaze*"),
        (Lineage("variation", 7, "bubblegrunge"), "a variation of *bubblegrunge*"),
        (Lineage("weirder", 7, "bubblegrunge"), "a weirder take on *bubblegrunge*"),
        (Lineage("blend", text="dub | polka"), "blended from *dub* and *polka*"),
        (Lineage("daily"), "a genre of the day"),
    ],
)
def test_lineage_describes_itself(lineage: Lineage, text: str | None) -> None:
    assert lineage.describe() == text


def test_lineage_refuses_an_unknown_kind() -> None:
    assert set(KINDS) == {"new", "like", "variation", "weirder", "blend", "daily"}
    with pytest.raises(ValueError, match="kind"):
        Lineage("remix")


async def test_each_kind_round_trips_through_the_store(sessions: Any, tmp_path: Path) -> None:
    service = GenreService(ScriptedGenerator(), sessions)
    plain = await deliver(service, "harbour twee")
    liked = await deliver(service, "neon dub", like="dub")
    variation = await deliver(
        service,
        "harbour twee revival",
        like="harbour twee",
        lineage=Lineage("variation", plain, "harbour twee"),
    )
    blend = await deliver(
        service, "dub polka", like="dub | polka", lineage=Lineage("blend", text="dub | polka")
    )
    daily = await deliver(service, "moss chant", lineage=Lineage("daily"))
    expected = {
        "harbour twee": (Lineage("new"), plain),
        "neon dub": (Lineage("like", text="dub"), liked),
        "harbour twee revival": (Lineage("variation", plain, "harbour twee"), variation),
        "dub polka": (Lineage("blend", text="dub | polka"), blend),
        "moss chant": (Lineage("daily"), daily),
    }
    for name, (lineage, gid) in expected.items():
        found = await lookup_genre(sessions, name, GUILD)
        assert found.generation_id == gid and found.lineage == lineage, name

    # `/genre top kind:` keeps only that kind; rows from before lineage count as "new".
    old = await reserve_generations(
        sessions,
        ["old timer"],
        guild_id=GUILD,
        channel_id=2,
        user_id=5,
        model_name="m",
        model_version_id=None,
        options={},
    )
    assert old[0].generation_id is not None
    await attach_message(sessions, old[0].generation_id, message_id=1, channel_id=2)
    async with sessions.begin() as s:
        await s.execute(
            update(Generation)
            .where(Generation.id == old[0].generation_id)
            .values(lineage_kind=None, lineage_text=None)
        )
    by_kind = {}
    for kind in KINDS:
        rows = await top_generations(sessions, GUILD, period="all", kind=kind)
        by_kind[kind] = sorted(r.name for r in rows)
    assert by_kind == {
        "new": ["harbour twee", "old timer"],
        "like": ["neon dub"],
        "variation": ["harbour twee revival"],
        "weirder": [],
        "blend": ["dub polka"],
        "daily": ["moss chant"],
    }
    assert len(await top_generations(sessions, GUILD, period="all")) == 6

    # Votes on a variation and a blend reach the votes file with their condition.
    await set_vote(sessions, variation, 8, 1)
    await set_vote(sessions, blend, 8, -1)
    path = tmp_path / "votes.jsonl"
    await write_votes_file(sessions, GUILD, path)
    votes = {v.name: (v.label, v.like) for v in read_votes(path)}
    assert votes == {
        "harbour twee revival": ("up", "harbour twee"),
        "dub polka": ("down", "dub | polka"),
    }
