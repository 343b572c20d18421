"""The genre of the day in the store: each server's schedule, and one post per server and day.

"One post per server per UTC day" is the unique key on ``daily_posts (guild_id, day)``. A
process claims the day by inserting that row *before* it generates anything; only the process
whose insert went in posts, then records its message on the row (:func:`record_post`, only
while it still holds the claim). A claim that never got its message (its process died, or hangs)
may be taken over by another process: once it is older than ``stale_after`` on the database's
clock, or at once when ``is_dead`` says its holder is gone. The takeover is an UPDATE
conditional on the old holder, so two processes never both win it. An attempt that fails
(channel gone, missing permissions, generator busy) gives its claim back
(:func:`give_back_claim`) and records the problem on the schedule with the time of the next try
(:func:`record_problem`).

Which day and hour it is comes from the caller's clock (the scheduler's, which tests drive);
claim ages come from the database's clock, like the retraining lease's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import delete, exists, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from bot.store.engine import SessionMaker, db_time
from bot.store.models import DailyPost, DailySchedule

log = logging.getLogger(__name__)

# A claim without a message after this long is taken to be abandoned (its holder bounds its
# own attempt well below it: bot.daily.ATTEMPT_TIMEOUT_S).
STALE_CLAIM = timedelta(minutes=10)
# Guild ids per query of schedules_due (well under the limits of SQLite and PostgreSQL).
GUILDS_PER_QUERY = 500


@dataclass(frozen=True)
class Schedule:
    """A server's schedule, with its last posted day (if any)."""

    guild_id: int
    channel_id: int
    hour: int
    set_by: int | None
    set_at: datetime
    problem: str | None = None
    problem_at: datetime | None = None
    retry_at: datetime | None = None
    last_day: date | None = None
    last_channel_id: int | None = None
    last_message_id: int | None = None


def as_utc(moment: datetime) -> datetime:
    """A stored time as an aware UTC datetime (SQLite gives them back naive, in UTC).

    >>> as_utc(datetime(2027, 3, 1, 9)).isoformat()
    '2027-03-01T09:00:00+00:00'
    """
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def due_at(day: date, hour: int) -> datetime:
    """When the post of ``day`` is due for a schedule at ``hour`` (UTC).

    >>> due_at(date(2027, 3, 1), 9).isoformat()
    '2027-03-01T09:00:00+00:00'
    """
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def _insert(session: Any, table: Any) -> Any:
    """The dialect's INSERT with ON CONFLICT support (SQLite and PostgreSQL)."""
    if session.bind.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def _schedule(row: DailySchedule, last: Any = None) -> Schedule:
    return Schedule(
        guild_id=int(row.guild_id),
        channel_id=int(row.channel_id),
        hour=int(row.hour),
        set_by=row.set_by,
        set_at=as_utc(row.set_at),
        problem=row.problem,
        problem_at=as_utc(row.problem_at) if row.problem_at else None,
        retry_at=as_utc(row.retry_at) if row.retry_at else None,
        last_day=last[0] if last else None,
        last_channel_id=last[1] if last else None,
        last_message_id=last[2] if last else None,
    )


async def set_schedule(
    sessions: SessionMaker,
    guild_id: int,
    *,
    channel_id: int,
    hour: int,
    set_by: int | None,
    now: datetime,
    problem: str | None = None,
) -> Schedule:
    """Create or replace ``guild_id``'s schedule, set at ``now``; ``problem``: what a check
    of the channel found wrong (it starts the schedule's problem afresh)."""
    values = {
        "channel_id": channel_id,
        "hour": hour,
        "set_by": set_by,
        "set_at": now,
        "problem": problem,
        "problem_at": now if problem else None,
        "retry_at": None,
    }
    async with sessions.begin() as session:
        await session.execute(
            _insert(session, DailySchedule)
            .values(guild_id=guild_id, **values)
            .on_conflict_do_update(index_elements=["guild_id"], set_=values)
        )
    schedule = await get_schedule(sessions, guild_id)
    assert schedule is not None
    return schedule


async def remove_schedule(sessions: SessionMaker, guild_id: int) -> bool:
    """Stop ``guild_id``'s genre of the day; False when it had none. Past posts are kept."""
    async with sessions.begin() as session:
        result = await session.execute(
            delete(DailySchedule).where(DailySchedule.guild_id == guild_id)
        )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def get_schedule(sessions: SessionMaker, guild_id: int) -> Schedule | None:
    async with sessions.begin() as session:
        row = await session.scalar(select(DailySchedule).where(DailySchedule.guild_id == guild_id))
        if row is None:
            return None
        last = (
            await session.execute(
                select(DailyPost.day, DailyPost.channel_id, DailyPost.message_id)
                .where(DailyPost.guild_id == guild_id, DailyPost.message_id.is_not(None))
                .order_by(DailyPost.day.desc())
                .limit(1)
            )
        ).first()
        return _schedule(row, last)


async def schedules_due(
    sessions: SessionMaker, *, now: datetime, guild_ids: Iterable[int]
) -> list[Schedule]:
    """The schedules of ``guild_ids`` whose post of today (``now``'s UTC day) is due: its
    hour has come, the schedule existed at that hour, today has no posted message yet, and no
    problem asked to wait past ``now``. A day claimed but not posted is listed: whether that
    claim may be taken over is :func:`claim_day`'s to decide."""
    today = now.astimezone(UTC).date()
    guilds = sorted(set(guild_ids))
    posted_today = exists().where(
        DailyPost.guild_id == DailySchedule.guild_id,
        DailyPost.day == today,
        DailyPost.message_id.is_not(None),
    )
    found: list[Schedule] = []
    async with sessions.begin() as session:
        for start in range(0, len(guilds), GUILDS_PER_QUERY):
            rows = await session.scalars(
                select(DailySchedule).where(
                    DailySchedule.guild_id.in_(guilds[start : start + GUILDS_PER_QUERY]),
                    DailySchedule.hour <= now.astimezone(UTC).hour,
                    or_(DailySchedule.retry_at.is_(None), DailySchedule.retry_at <= now),
                    ~posted_today,
                )
            )
            found += [_schedule(row) for row in rows]
    return [s for s in found if s.set_at <= due_at(today, s.hour)]


async def claim_day(
    sessions: SessionMaker,
    guild_id: int,
    day: date,
    holder: str,
    *,
    stale_after: timedelta = STALE_CLAIM,
    is_dead: Callable[[str], bool] | None = None,
) -> bool:
    """Claim ``guild_id``'s post of ``day`` for ``holder``; True when this call won it (by
    inserting the row, or by taking over an abandoned claim, see the module docstring)."""
    async with sessions.begin() as session:
        inserted = await session.scalar(
            _insert(session, DailyPost)
            .values(guild_id=guild_id, day=day, claimed_by=holder, claimed_at=db_time(session))
            .on_conflict_do_nothing(index_elements=["guild_id", "day"])
            .returning(DailyPost.id)
        )
        if inserted is not None:
            return True
        this_day = (DailyPost.guild_id == guild_id, DailyPost.day == day)
        row = (
            await session.execute(
                select(
                    DailyPost.claimed_by,
                    DailyPost.message_id,
                    DailyPost.claimed_at < db_time(session, -stale_after.total_seconds()),
                ).where(*this_day)
            )
        ).first()
        if row is None or row[1] is not None:  # given back meanwhile (try again), or posted
            return False
        old, stale = str(row[0]), bool(row[2])
        if not stale and not (is_dead is not None and is_dead(old)):
            return False
        taken = await session.execute(
            update(DailyPost)
            .where(*this_day, DailyPost.claimed_by == old, DailyPost.message_id.is_(None))
            .values(claimed_by=holder, claimed_at=db_time(session))
            .execution_options(synchronize_session=False)
        )
    won = taken.rowcount == 1  # type: ignore[attr-defined]
    if won:
        why = "stale" if stale else "its process is gone"
        log.info("took over the daily post of guild %s on %s from %s (%s)", guild_id, day, old, why)
    return won


async def holds_claim(sessions: SessionMaker, guild_id: int, day: date, holder: str) -> bool:
    """Whether ``holder`` still holds the unposted claim of ``guild_id``'s ``day``."""
    async with sessions.begin() as session:
        found = await session.scalar(
            select(DailyPost.id).where(
                DailyPost.guild_id == guild_id,
                DailyPost.day == day,
                DailyPost.claimed_by == holder,
                DailyPost.message_id.is_(None),
            )
        )
    return found is not None


async def record_post(
    sessions: SessionMaker,
    guild_id: int,
    day: date,
    holder: str,
    *,
    channel_id: int,
    message_id: int,
    generation_id: int | None,
) -> bool:
    """Record the message of ``holder``'s claim and clear the schedule's problem; False when
    the claim was taken over meanwhile (nothing changes then)."""
    async with sessions.begin() as session:
        result = await session.execute(
            update(DailyPost)
            .where(
                DailyPost.guild_id == guild_id,
                DailyPost.day == day,
                DailyPost.claimed_by == holder,
                DailyPost.message_id.is_(None),
            )
            .values(
                channel_id=channel_id,
                message_id=message_id,
                generation_id=generation_id,
                posted_at=db_time(session),
            )
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return False
        await session.execute(
            update(DailySchedule)
            .where(DailySchedule.guild_id == guild_id)
            .values(problem=None, problem_at=None, retry_at=None)
        )
    return True


async def give_back_claim(sessions: SessionMaker, guild_id: int, day: date, holder: str) -> None:
    """Drop ``holder``'s unposted claim (its attempt failed), so that a later try may claim."""
    async with sessions.begin() as session:
        await session.execute(
            delete(DailyPost).where(
                DailyPost.guild_id == guild_id,
                DailyPost.day == day,
                DailyPost.claimed_by == holder,
                DailyPost.message_id.is_(None),
            )
        )


async def record_problem(
    sessions: SessionMaker,
    guild_id: int,
    problem: str,
    *,
    now: datetime,
    retry_at: datetime | None,
) -> None:
    """Note why ``guild_id``'s genre of the day was not posted, and when to try again."""
    async with sessions.begin() as session:
        await session.execute(
            update(DailySchedule)
            .where(DailySchedule.guild_id == guild_id)
            .values(problem=problem, problem_at=now, retry_at=retry_at)
        )
