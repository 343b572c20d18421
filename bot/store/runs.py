"""Training runs: a FIFO queue in the database, one training slot per machine, activation.

Every ``/retrain start`` inserts a run with status ``pending`` (queued); a partial unique index
allows one open (queued or running) run per server, so racing requests queue one. A process
runs the oldest queued run once it holds the machine's training slot, the single row of
``retrain_leases``: it takes the row with one conditional ``UPDATE`` (atomic on SQLite and on
PostgreSQL, so several bot processes share one queue), renews ``lease_until`` while the run
goes on (:func:`renew_lease`, which also tells it about a cancel from another process), and
releases it at the end. Lease times are the database's clock, never a host's. A holder that
dies lets its lease expire; the next claim marks its run failed.

A run that passes the gate ends in one transaction that inserts its model version, makes it
the server's active one and marks the run succeeded (:func:`finish_activated`), so the database
never points a server at a half-registered model; it commits only for the slot's holder, while
the run is running and nobody asked to cancel it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.errors import MicrogenreError
from bot.store.engine import SessionMaker, db_time
from bot.store.models import (
    RUN_ACTIVE_STATES,
    RUN_CANCELLED,
    RUN_FAILED,
    RUN_PENDING,
    RUN_REJECTED,
    RUN_RUNNING,
    RUN_SUCCEEDED,
    Generation,
    RetrainLease,
    TrainingRun,
    Vote,
    utcnow,
)
from bot.store.versions import (
    VersionInfo,
    activate_in,
    new_version,
)
from bot.store.versions import _info as _version_info

LEASE_ROW = 1
LEASE_LOST = "the training slot was lost (the bot stalled for too long)"
# Runs that spent the machine's time: they start a server's cool-down.
COUNTED_STATES = (RUN_SUCCEEDED, RUN_REJECTED, RUN_CANCELLED)


class RetrainRefusedError(MicrogenreError):
    """A server may not queue a run now; the message says why and when it may."""

    def __init__(self, message: str, *, retry_at: datetime | None = None) -> None:
        self.retry_at = retry_at
        super().__init__(message)


class ActivationRefusedError(MicrogenreError):
    """A run may not activate its adapter: someone cancelled it, or its process no longer
    holds it (the lease was lost and the run may already be marked failed). Nothing was
    registered; ``status`` is how the run ends (cancelled or failed)."""

    def __init__(self, message: str, *, status: str) -> None:
        self.status = status
        super().__init__(message)


@dataclass(frozen=True)
class RunInfo:
    id: int
    status: str
    progress: float
    step: int
    total_steps: int
    loss: float | None
    error: str | None
    requested_by: int | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    result: dict[str, Any]
    options: dict[str, Any]
    model_version_id: int | None
    guild_id: int | None = None
    channel_id: int | None = None
    message_id: int | None = None
    phase: str = "queued"
    cancel_reason: str | None = None
    # The lease holder that claimed the run (set by :func:`claim_next` only): the one process
    # that may activate it.
    holder: str | None = None


def _info(run: TrainingRun, holder: str | None = None) -> RunInfo:
    return RunInfo(
        id=run.id,
        status=run.status,
        progress=run.progress,
        step=run.step,
        total_steps=run.total_steps,
        loss=run.loss,
        error=run.error,
        requested_by=run.requested_by,
        created_at=run.created_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
        result=dict(run.result or {}),
        options=dict(run.options or {}),
        model_version_id=run.model_version_id,
        guild_id=run.guild_id,
        channel_id=run.channel_id,
        message_id=run.message_id,
        phase=run.phase or "queued",
        cancel_reason=run.cancel_reason,
        holder=holder,
    )


def _aware(when: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes (stored as UTC); PostgreSQL aware ones."""
    if when is None or when.tzinfo is not None:
        return when
    return when.replace(tzinfo=utcnow().tzinfo)


def _scope(guild_id: int | None) -> Any:
    return TrainingRun.guild_id.is_(None) if guild_id is None else TrainingRun.guild_id == guild_id


async def _last_counted(session: AsyncSession, guild_id: int | None) -> TrainingRun | None:
    return await session.scalar(
        select(TrainingRun)
        .where(
            _scope(guild_id),
            TrainingRun.status.in_(COUNTED_STATES),
            TrainingRun.started_at.is_not(None),
        )
        .order_by(TrainingRun.id.desc())
        .limit(1)
    )


async def votes_since(session: AsyncSession, guild_id: int | None, since: datetime | None) -> int:
    """Votes cast (or changed) on ``guild_id``'s generations after ``since``."""
    stmt = (
        select(func.count())
        .select_from(Vote)
        .join(Generation, Generation.id == Vote.generation_id)
        .where(
            Generation.guild_id.is_(None) if guild_id is None else Generation.guild_id == guild_id
        )
    )
    if since is not None:
        stmt = stmt.where(Vote.updated_at > since)
    return int(await session.scalar(stmt) or 0)


def _busy_error(busy: RunInfo | None) -> RetrainRefusedError:
    if busy is None:  # it finished meanwhile
        return RetrainRefusedError(
            "This server's retraining run is already queued or in progress: see `/retrain status`."
        )
    state = "queued" if busy.status == RUN_PENDING else "in progress"
    return RetrainRefusedError(
        f"This server's retraining run #{busy.id} is already {state}: see `/retrain status`."
    )


async def _check_allowed(
    session: AsyncSession,
    guild_id: int | None,
    *,
    cooldown_h: float,
    min_votes: int,
    now: datetime,
) -> None:
    last = await _last_counted(session, guild_id)
    since = _aware(last.started_at) if last is not None else None
    if since is not None and cooldown_h > 0:
        ready = since + timedelta(hours=cooldown_h)
        if ready > now:
            raise RetrainRefusedError(
                f"This server retrained recently (run #{last.id if last else '?'}); the next "
                f"run is possible from {ready:%Y-%m-%d %H:%M} UTC.",
                retry_at=ready,
            )
    votes = await votes_since(session, guild_id, since)
    if votes < min_votes:
        what = "since its last run" if since is not None else "so far"
        raise RetrainRefusedError(
            f"This server has {votes} vote{'s' if votes != 1 else ''} {what}; retraining needs "
            f"{min_votes}. Vote on {min_votes - votes} more genres with 👍 or 👎 first."
        )


async def enqueue_run(
    sessions: SessionMaker,
    *,
    requested_by: int | None,
    guild_id: int | None,
    channel_id: int | None,
    options: dict[str, Any],
    cooldown_h: float = 0.0,
    min_votes: int = 0,
) -> RunInfo:
    """Queue a run for ``guild_id``, or raise :class:`RetrainRefusedError` saying why not
    (a run of this server already queued or running, its cool-down, too few new votes).

    The run is inserted first: the unique index on open runs decides between racing requests
    (on SQLite the insert also takes the write lock before anything is read), then the
    cool-down and vote rules are checked in the same transaction, which a refusal rolls back.
    """
    try:
        async with sessions.begin() as session:
            run = TrainingRun(
                status=RUN_PENDING,
                phase="queued",
                requested_by=requested_by,
                guild_id=guild_id,
                channel_id=channel_id,
                options=options,
            )
            session.add(run)
            await session.flush()
            await _check_allowed(
                session, guild_id, cooldown_h=cooldown_h, min_votes=min_votes, now=utcnow()
            )
            return _info(run)
    except IntegrityError:
        pass
    raise _busy_error(await active_run(sessions, guild_id))


async def create_run(
    sessions: SessionMaker,
    *,
    requested_by: int | None,
    guild_id: int | None,
    channel_id: int | None,
    options: dict[str, Any],
) -> RunInfo | None:
    """Queue a run without limits; None when this server already has one queued or running."""
    try:
        return await enqueue_run(
            sessions,
            requested_by=requested_by,
            guild_id=guild_id,
            channel_id=channel_id,
            options=options,
        )
    except RetrainRefusedError:
        return None


async def queue_position(sessions: SessionMaker, run_id: int) -> int | None:
    """1 for the next queued run to train, 2 behind it, ...; None when it is not queued."""
    async with sessions.begin() as session:
        run = await session.get(TrainingRun, run_id)
        if run is None or run.status != RUN_PENDING:
            return None
        ahead = await session.scalar(
            select(func.count())
            .select_from(TrainingRun)
            .where(TrainingRun.status == RUN_PENDING, TrainingRun.id < run_id)
        )
        return int(ahead or 0) + 1


async def active_run(sessions: SessionMaker, guild_id: int | None = None) -> RunInfo | None:
    """``guild_id``'s queued or running run, if any."""
    async with sessions.begin() as session:
        run = await session.scalar(
            select(TrainingRun)
            .where(_scope(guild_id), TrainingRun.status.in_(RUN_ACTIVE_STATES))
            .order_by(TrainingRun.id.desc())
            .limit(1)
        )
        return None if run is None else _info(run)


async def latest_run(sessions: SessionMaker, guild_id: int | None = None) -> RunInfo | None:
    """``guild_id``'s newest run (only that server's: an admin never sees another's)."""
    async with sessions.begin() as session:
        run = await session.scalar(
            select(TrainingRun).where(_scope(guild_id)).order_by(TrainingRun.id.desc()).limit(1)
        )
        return None if run is None else _info(run)


async def runs_by_status(sessions: SessionMaker, status: str) -> list[RunInfo]:
    async with sessions.begin() as session:
        rows = await session.scalars(
            select(TrainingRun).where(TrainingRun.status == status).order_by(TrainingRun.id)
        )
        return [_info(r) for r in rows.all()]


async def get_run(sessions: SessionMaker, run_id: int) -> RunInfo | None:
    async with sessions.begin() as session:
        run = await session.get(TrainingRun, run_id)
        return None if run is None else _info(run)


# The columns that say how a run ended (see :func:`update_run`).
_END_COLUMNS = frozenset({"status", "error", "phase", "started_at", "finished_at"})


def _finishing(values: dict[str, Any]) -> dict[str, Any]:
    status = values.get("status")
    if status == RUN_RUNNING and "started_at" not in values:
        values["started_at"] = utcnow()
    if status is not None and status not in RUN_ACTIVE_STATES:
        values.setdefault("finished_at", utcnow())
        values.setdefault("phase", "finished")
    return values


async def update_run(sessions: SessionMaker, run_id: int, **values: Any) -> None:
    """Set columns of a run (status, phase, progress, step, loss, message_id, result, ...).

    How a run ended is written once: a run that another process already ended (a stalled
    holder's run marked failed, say) keeps its status, error and phase; its other columns are
    still written.
    """
    values = _finishing(values)
    async with sessions.begin() as session:
        stmt = update(TrainingRun).where(TrainingRun.id == run_id)
        status = values.get("status")
        if status is not None:
            written = await session.execute(
                stmt.where(
                    TrainingRun.status.in_(RUN_ACTIVE_STATES) | (TrainingRun.status == status)
                ).values(**values)
            )
            if written.rowcount == 1:  # type: ignore[attr-defined]
                return
            values = {k: v for k, v in values.items() if k not in _END_COLUMNS}
        if values:
            await session.execute(stmt.values(**values))


async def cancel_run(sessions: SessionMaker, run_id: int, reason: str) -> RunInfo | None:
    """Cancel a queued run at once; ask the holder of a running one to stop it (see
    :func:`renew_lease`). Returns the run as it is now, None when it had finished."""
    async with sessions.begin() as session:
        run = await session.get(TrainingRun, run_id)
        if run is None or run.status not in RUN_ACTIVE_STATES:
            return None
        if run.status == RUN_PENDING:
            run.status = RUN_CANCELLED
            run.phase = "finished"
            run.error = reason
            run.finished_at = utcnow()
        else:
            run.cancel_reason = reason
        await session.flush()
        return _info(run)


# ---------------------------------------------------------------------- the training slot


async def _lease_row(session: AsyncSession) -> RetrainLease:
    lease = await session.get(RetrainLease, LEASE_ROW)
    if lease is None:  # a store created without the migration's row
        lease = RetrainLease(id=LEASE_ROW)
        session.add(lease)
        await session.flush()
    return lease


def _lease_is_live(session: AsyncSession) -> ColumnElement[bool]:
    return RetrainLease.lease_until >= db_time(session)


async def claim_next(sessions: SessionMaker, holder: str, lease_s: float) -> RunInfo | None:
    """Take the training slot and the oldest queued run, marked running; None when the slot
    is held by a live holder or nothing is queued (the slot stays free then).

    A run left running by a holder whose lease expired is marked failed first.
    """
    now = utcnow()
    async with sessions.begin() as session:
        await _lease_row(session)
        taken = await session.execute(
            update(RetrainLease)
            .where(
                RetrainLease.id == LEASE_ROW,
                (RetrainLease.lease_until.is_(None))
                | ~_lease_is_live(session)
                | (RetrainLease.holder == holder),
            )
            .values(holder=holder, lease_until=db_time(session, lease_s))
            .execution_options(synchronize_session=False)
        )
        if taken.rowcount != 1:  # type: ignore[attr-defined]
            return None
        lease = await session.get(RetrainLease, LEASE_ROW, populate_existing=True)
        assert lease is not None
        await _fail_orphans(session, keep=None, reason="interrupted: its bot process stopped")
        run = await session.scalar(
            select(TrainingRun)
            .where(TrainingRun.status == RUN_PENDING)
            .order_by(TrainingRun.id)
            .limit(1)
        )
        if run is None:
            lease.holder, lease.run_id, lease.lease_until = None, None, None
            return None
        run.status, run.phase, run.started_at = RUN_RUNNING, "starting", now
        lease.run_id = run.id
        await session.flush()
        return _info(run, holder)


async def renew_lease(
    sessions: SessionMaker, holder: str, run_id: int, lease_s: float
) -> str | None:
    """Extend ``holder``'s lease; returns why the run must stop (a cancel from any process,
    or a lost lease), else None."""
    async with sessions.begin() as session:
        renewed = await session.execute(
            update(RetrainLease)
            .where(RetrainLease.id == LEASE_ROW, RetrainLease.holder == holder)
            .values(lease_until=db_time(session, lease_s))
        )
        if renewed.rowcount != 1:  # type: ignore[attr-defined]
            return LEASE_LOST
        run = await session.get(TrainingRun, run_id)
        return None if run is None else run.cancel_reason


async def release_lease(sessions: SessionMaker, holder: str) -> None:
    async with sessions.begin() as session:
        await session.execute(
            update(RetrainLease)
            .where(RetrainLease.id == LEASE_ROW, RetrainLease.holder == holder)
            .values(holder=None, run_id=None, lease_until=None)
        )


async def expire_lease(sessions: SessionMaker, holder: str) -> None:
    """The lease of a holder known to be dead (same machine, process gone) ends now."""
    async with sessions.begin() as session:
        await session.execute(
            update(RetrainLease)
            .where(RetrainLease.id == LEASE_ROW, RetrainLease.holder == holder)
            .values(lease_until=db_time(session, -1.0))
        )


async def lease_holder(sessions: SessionMaker) -> tuple[str | None, datetime | None]:
    async with sessions.begin() as session:
        lease = await _lease_row(session)
        return lease.holder, _aware(lease.lease_until)


async def _fail_orphans(session: AsyncSession, *, keep: int | None, reason: str) -> list[int]:
    """Mark failed every running run except ``keep``; their ids.

    One conditional ``UPDATE``: a run whose holder committed its activation meanwhile is no
    longer running, and stays succeeded.
    """
    stmt = update(TrainingRun).where(TrainingRun.status == RUN_RUNNING)
    if keep is not None:
        stmt = stmt.where(TrainingRun.id != keep)
    failed = await session.scalars(
        stmt.values(status=RUN_FAILED, phase="finished", error=reason, finished_at=utcnow())
        .returning(TrainingRun.id)
        .execution_options(synchronize_session=False)
    )
    return sorted(failed.all())


async def fail_interrupted_runs(sessions: SessionMaker, reason: str) -> list[int]:
    """At start-up: mark failed every running run that no live lease holds; their ids.

    Queued runs stay queued: the queue survives a restart.
    """
    async with sessions.begin() as session:
        await _lease_row(session)
        live = await session.scalar(
            select(RetrainLease.run_id).where(RetrainLease.id == LEASE_ROW, _lease_is_live(session))
        )
        return await _fail_orphans(session, keep=live, reason=reason)


# ---------------------------------------------------------------------- activation


async def finish_activated(
    sessions: SessionMaker,
    run_id: int,
    *,
    holder: str,
    name: str,
    path: str,
    base_model: str,
    metrics: dict[str, Any],
    guild_id: int | None,
    result: dict[str, Any],
) -> VersionInfo:
    """In one transaction: register the run's adapter as a version of ``guild_id``, make it
    that server's active model, and mark the run succeeded.

    Only while ``holder`` holds the training slot for this run, the run is running and nobody
    asked to cancel it; otherwise nothing changes and :class:`ActivationRefusedError` says how
    the run ends. The lease row is written first, so that on PostgreSQL a concurrent claim of
    the slot waits for this transaction (or this one sees the slot taken).
    """
    async with sessions.begin() as session:
        held = await session.execute(
            update(RetrainLease)
            .where(
                RetrainLease.id == LEASE_ROW,
                RetrainLease.holder == holder,
                RetrainLease.run_id == run_id,
            )
            .values(holder=holder)
            .execution_options(synchronize_session=False)
        )
        succeeded = await session.execute(
            update(TrainingRun)
            .where(
                TrainingRun.id == run_id,
                TrainingRun.status == RUN_RUNNING,
                TrainingRun.cancel_reason.is_(None),
            )
            .values(**_finishing({"status": RUN_SUCCEEDED, "error": None, "result": result}))
            .execution_options(synchronize_session=False)
        )
        if held.rowcount != 1 or succeeded.rowcount != 1:  # type: ignore[attr-defined]
            raise await _refusal(session, run_id)
        version = new_version(
            name=name, path=path, base_model=base_model, metrics=metrics, guild_id=guild_id
        )
        session.add(version)
        await session.flush()
        await activate_in(session, version)
        await session.execute(
            update(TrainingRun)
            .where(TrainingRun.id == run_id)
            .values(model_version_id=version.id)
            .execution_options(synchronize_session=False)
        )
        return _version_info(version)


async def _refusal(session: AsyncSession, run_id: int) -> ActivationRefusedError:
    """Why a run may not activate (see :func:`finish_activated`); a cancel request wins."""
    run = await session.get(TrainingRun, run_id, populate_existing=True)
    if run is not None and run.cancel_reason:
        return ActivationRefusedError(run.cancel_reason, status=RUN_CANCELLED)
    if run is not None and run.status not in RUN_ACTIVE_STATES:
        return ActivationRefusedError(
            f"{LEASE_LOST}; the run was already marked {run.status}", status=RUN_FAILED
        )
    return ActivationRefusedError(LEASE_LOST, status=RUN_FAILED)
