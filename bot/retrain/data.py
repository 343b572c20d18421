"""What a server run learns from: the server's 👍/👎 votes, and the command line that runs it.

:func:`write_votes_file` turns one guild's voted generations into a votes file (see
:func:`model.dataset.read_votes`): a generation whose net score is positive is ``up``, negative
``down``; a tie teaches nothing and is left out. :func:`server_run_command` is the
``microgenre server-run`` command line of the run. torch-free.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import case, func, select

from bot.store.engine import SessionMaker
from bot.store.models import Generation, Genre, Vote
from model.dataset import Vote as VoteLine
from model.dataset import write_votes

VOTES_FILE = "votes.jsonl"


@dataclass(frozen=True)
class VoteCounts:
    """How many generations a votes file says to make more (``up``) or less (``down``) of."""

    up: int
    down: int

    @property
    def total(self) -> int:
        return self.up + self.down


def label(up: int, down: int) -> str | None:
    """The label of a generation with ``up`` 👍 and ``down`` 👎; None for a tie.

    >>> label(3, 1), label(1, 2), label(2, 2)
    ('up', 'down', None)
    """
    net = up - down
    return "up" if net > 0 else "down" if net < 0 else None


async def guild_votes(
    sessions: SessionMaker, guild_id: int | None, *, since: datetime | None = None
) -> list[VoteLine]:
    """The labelled generations of one guild (oldest first), optionally only those created
    since ``since``. Other guilds' votes never count; ``guild_id`` None (a run of the
    deployment's default model) takes every guild's."""
    ups = func.coalesce(func.sum(case((Vote.value > 0, 1), else_=0)), 0)
    downs = func.coalesce(func.sum(case((Vote.value < 0, 1), else_=0)), 0)
    stmt = (
        select(Genre.display_name, Generation.options, ups, downs)
        .join(Generation, Generation.genre_id == Genre.id)
        .join(Vote, Vote.generation_id == Generation.id)
        # Not by options: PostgreSQL cannot group json (it is one per generation id anyway).
        .group_by(Generation.id, Genre.display_name)
        .order_by(Generation.id)
    )
    if guild_id is not None:
        stmt = stmt.where(Generation.guild_id == guild_id)
    if since is not None:
        stmt = stmt.where(Generation.created_at >= since)
    async with sessions.begin() as session:
        rows = (await session.execute(stmt)).all()
    votes = []
    for name, options, up, down in rows:
        verdict = label(int(up), int(down))
        like = (options or {}).get("like")
        if verdict is not None:
            votes.append(VoteLine(str(name), verdict, str(like) if like else None))
    return votes


async def write_votes_file(
    sessions: SessionMaker, guild_id: int | None, path: Path, *, since: datetime | None = None
) -> VoteCounts:
    """Write the guild's votes (:func:`guild_votes`) to ``path``; how many of each label."""
    votes = await guild_votes(sessions, guild_id, since=since)
    await asyncio.to_thread(write_votes, votes, path)
    ups = sum(v.desirable for v in votes)
    return VoteCounts(up=ups, down=len(votes) - ups)


def server_run_command(
    train_command: Sequence[str],
    *,
    output: Path,
    votes_file: Path,
    from_adapter: str | None,
    max_steps: int | None = None,
    max_minutes: float | None = None,
) -> list[str]:
    """The ``microgenre server-run`` command line of a server run (``from_adapter`` None: the
    deployment's configured or shipped adapter).

    >>> argv = server_run_command(["mg", "server-run"], output=Path("/a/run-1"),
    ...                           votes_file=Path("v.jsonl"), from_adapter="/a/run-0")
    >>> " ".join(argv)
    'mg server-run --progress-json --output /a/run-1 --votes v.jsonl --from-adapter /a/run-0'
    """
    command = [*train_command, "--progress-json", "--output", str(output)]
    command += ["--votes", str(votes_file)]
    if from_adapter is not None:
        command += ["--from-adapter", from_adapter]
    if max_steps is not None:
        command += ["--max-steps", str(max_steps)]
    if max_minutes is not None:
        command += ["--max-minutes", str(max_minutes)]
    return command
