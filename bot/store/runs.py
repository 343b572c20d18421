"""Training runs and model versions: one active run at a time, activation of a new version."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from bot.store.engine import SessionMaker
from bot.store.models import (
    RUN_ACTIVE_STATES,
    RUN_FAILED,
    RUN_PENDING,
    RUN_RUNNING,
    ModelVersion,
    TrainingRun,
    utcnow,
)


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


def _info(run: TrainingRun) -> RunInfo:
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
    )


async def create_run(
    sessions: SessionMaker,
    *,
    requested_by: int | None,
    guild_id: int | None,
    channel_id: int | None,
    options: dict[str, Any],
) -> RunInfo | None:
    """Insert a pending run, or return None when another run is pending or running."""
    async with sessions.begin() as session:
        busy = await session.scalar(
            select(TrainingRun.id).where(TrainingRun.status.in_(RUN_ACTIVE_STATES)).limit(1)
        )
        if busy is not None:
            return None
        run = TrainingRun(
            status=RUN_PENDING,
            requested_by=requested_by,
            guild_id=guild_id,
            channel_id=channel_id,
            options=options,
        )
        session.add(run)
        await session.flush()
        return _info(run)


async def active_run(sessions: SessionMaker) -> RunInfo | None:
    async with sessions.begin() as session:
        run = await session.scalar(
            select(TrainingRun)
            .where(TrainingRun.status.in_(RUN_ACTIVE_STATES))
            .order_by(TrainingRun.id.desc())
            .limit(1)
        )
        return None if run is None else _info(run)


async def latest_run(sessions: SessionMaker) -> RunInfo | None:
    async with sessions.begin() as session:
        run = await session.scalar(select(TrainingRun).order_by(TrainingRun.id.desc()).limit(1))
        return None if run is None else _info(run)


async def get_run(sessions: SessionMaker, run_id: int) -> RunInfo | None:
    async with sessions.begin() as session:
        run = await session.get(TrainingRun, run_id)
        return None if run is None else _info(run)


async def update_run(sessions: SessionMaker, run_id: int, **values: Any) -> None:
    """Set columns of a run (status, progress, step, loss, message_id, result, error, ...)."""
    status = values.get("status")
    if status == RUN_RUNNING and "started_at" not in values:
        values["started_at"] = utcnow()
    if status is not None and status not in RUN_ACTIVE_STATES and "finished_at" not in values:
        values["finished_at"] = utcnow()
    async with sessions.begin() as session:
        await session.execute(update(TrainingRun).where(TrainingRun.id == run_id).values(**values))


async def fail_interrupted_runs(sessions: SessionMaker, reason: str) -> list[int]:
    """Mark every pending or running run failed (called at start-up); returns their ids."""
    async with sessions.begin() as session:
        ids = list(
            (
                await session.scalars(
                    select(TrainingRun.id).where(TrainingRun.status.in_(RUN_ACTIVE_STATES))
                )
            ).all()
        )
        if ids:
            await session.execute(
                update(TrainingRun)
                .where(TrainingRun.id.in_(ids))
                .values(status=RUN_FAILED, error=reason, finished_at=utcnow())
            )
        return ids


@dataclass(frozen=True)
class VersionInfo:
    id: int
    name: str
    path: str
    base_model: str
    metrics: dict[str, Any]
    active: bool
    created_at: datetime


def _version(v: ModelVersion) -> VersionInfo:
    return VersionInfo(
        v.id, v.name, v.path, v.base_model, dict(v.metrics or {}), v.active, v.created_at
    )


async def active_version(sessions: SessionMaker) -> VersionInfo | None:
    async with sessions.begin() as session:
        v = await session.scalar(select(ModelVersion).where(ModelVersion.active.is_(True)))
        return None if v is None else _version(v)


async def add_version(
    sessions: SessionMaker,
    *,
    name: str,
    path: str,
    base_model: str,
    metrics: dict[str, Any],
    activate: bool,
) -> VersionInfo:
    """Insert a model version; with ``activate`` it becomes the only active one."""
    async with sessions.begin() as session:
        if activate:
            await session.execute(
                update(ModelVersion).where(ModelVersion.active.is_(True)).values(active=False)
            )
        v = ModelVersion(
            name=name, path=path, base_model=base_model, metrics=metrics, active=activate
        )
        session.add(v)
        await session.flush()
        return _version(v)


async def set_active_version(sessions: SessionMaker, version_id: int | None) -> None:
    """Make ``version_id`` the only active version (None: no version is active)."""
    async with sessions.begin() as session:
        await session.execute(
            update(ModelVersion).where(ModelVersion.active.is_(True)).values(active=False)
        )
        if version_id is not None:
            await session.execute(
                update(ModelVersion).where(ModelVersion.id == version_id).values(active=True)
            )
