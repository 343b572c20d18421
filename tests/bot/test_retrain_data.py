"""The votes file of a server run: one guild's 👍/👎, labelled by net score."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bot.retrain.data import write_votes_file
from bot.store.generations import attach_message, reserve_generations
from bot.store.votes import set_vote
from model.dataset import Vote, read_votes


async def _issue(sessions: Any, names: list[str], guild: int, like: str | None = None) -> list[int]:
    reserved = await reserve_generations(
        sessions,
        names,
        guild_id=guild,
        channel_id=2,
        user_id=3,
        model_name="m",
        model_version_id=None,
        options={"like": like},
    )
    ids = []
    for r in reserved:
        assert r.generation_id is not None, r
        await attach_message(sessions, r.generation_id, message_id=r.generation_id, channel_id=2)
        ids.append(r.generation_id)
    return ids


async def test_votes_file_holds_only_this_guilds_labelled_generations(
    sessions: Any, tmp_path: Path
) -> None:
    doom, sunny, tie, unvoted = await _issue(
        sessions, ["doom polka", "sunny pop", "even split", "never voted"], guild=1
    )
    liked = (await _issue(sessions, ["sludge waltz"], guild=1, like="waltz"))[0]
    other = (await _issue(sessions, ["grind gospel"], guild=2))[0]
    for user in range(3):
        await set_vote(sessions, doom, user, 1)
    await set_vote(sessions, doom, 9, -1)  # net +2: up
    await set_vote(sessions, sunny, 1, -1)
    await set_vote(sessions, sunny, 2, -1)  # net -2: down
    await set_vote(sessions, tie, 1, 1)
    await set_vote(sessions, tie, 2, -1)  # net 0: left out
    await set_vote(sessions, liked, 1, 1)
    await set_vote(sessions, other, 1, 1)  # another guild's
    path = tmp_path / "run" / "votes.jsonl"
    counts = await write_votes_file(sessions, 1, path)
    assert (counts.up, counts.down, counts.total) == (2, 1, 3)
    assert read_votes(path) == [
        Vote("doom polka", "up"),
        Vote("sunny pop", "down"),
        Vote("sludge waltz", "up", like="waltz"),
    ]
    assert unvoted  # issued, never voted: not in the file
    everyone = await write_votes_file(sessions, None, tmp_path / "all.jsonl")
    assert (everyone.up, everyone.down) == (3, 1)
