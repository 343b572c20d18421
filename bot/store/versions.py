"""Model versions per server: which adapter each server uses, activation and rollback.

A version of a server (``guild_id`` set) is that server's own fine-tuned adapter; a version
with ``guild_id`` NULL is a deployment default, activated by the operator. A server uses its
own active version, else the active default, else the shipped adapter (no row at all). At
most one version is active per scope (a unique partial index); activating one records what it
replaced in ``previous_id`` so that a rollback returns to it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.errors import MicrogenreError
from bot.store.engine import SessionMaker
from bot.store.models import ModelVersion, utcnow

log = logging.getLogger(__name__)


class VersionError(MicrogenreError):
    """A model name or server id that does not fit the request (exit status 2 in the CLI)."""

    exit_code = 2


@dataclass(frozen=True)
class VersionInfo:
    id: int
    name: str
    path: str
    base_model: str
    metrics: dict[str, Any]
    active: bool
    created_at: datetime
    guild_id: int | None = None
    activated_at: datetime | None = None
    previous_id: int | None = None

    def scope(self) -> str:
        """``"server 123"`` or ``"the default"``."""
        return "the default" if self.guild_id is None else f"server {self.guild_id}"


def _info(v: ModelVersion) -> VersionInfo:
    return VersionInfo(
        id=v.id,
        name=v.name,
        path=v.path,
        base_model=v.base_model,
        metrics=dict(v.metrics or {}),
        active=bool(v.active),
        created_at=v.created_at,
        guild_id=v.guild_id,
        activated_at=v.activated_at,
        previous_id=v.previous_id,
    )


def _in_scope(guild_id: int | None) -> Any:
    return (
        ModelVersion.guild_id.is_(None) if guild_id is None else ModelVersion.guild_id == guild_id
    )


async def _active_in(session: AsyncSession, guild_id: int | None) -> ModelVersion | None:
    return await session.scalar(
        select(ModelVersion).where(ModelVersion.active.is_(True), _in_scope(guild_id))
    )


async def active_version(sessions: SessionMaker, guild_id: int | None = None) -> VersionInfo | None:
    """The active version of exactly this scope (``None``: the deployment default)."""
    async with sessions.begin() as session:
        v = await _active_in(session, guild_id)
        return None if v is None else _info(v)


async def serving_version(sessions: SessionMaker, guild_id: int | None) -> VersionInfo | None:
    """What ``guild_id`` generates with: its own active version, else the active default;
    None means the shipped adapter (what the worker starts with when no default is active)."""
    async with sessions.begin() as session:
        v = await _active_in(session, guild_id) if guild_id is not None else None
        if v is None:
            v = await _active_in(session, None)
        return None if v is None else _info(v)


async def find_version(sessions: SessionMaker, name: str) -> VersionInfo | None:
    async with sessions.begin() as session:
        v = await session.scalar(select(ModelVersion).where(ModelVersion.name == name))
        return None if v is None else _info(v)


async def list_versions(
    sessions: SessionMaker, *, guild_id: int | None = None, every: bool = True
) -> list[VersionInfo]:
    """Versions, oldest first: all of them, or (``every=False``) those of ``guild_id``'s scope."""
    stmt = select(ModelVersion).order_by(ModelVersion.id)
    if not every:
        stmt = stmt.where(_in_scope(guild_id))
    async with sessions.begin() as session:
        return [_info(v) for v in (await session.scalars(stmt)).all()]


async def guild_models(sessions: SessionMaker) -> dict[int, VersionInfo]:
    """The active version of every server that has its own model."""
    async with sessions.begin() as session:
        rows = await session.scalars(
            select(ModelVersion).where(
                ModelVersion.active.is_(True), ModelVersion.guild_id.is_not(None)
            )
        )
        return {int(v.guild_id): _info(v) for v in rows.all() if v.guild_id is not None}


async def referenced_paths(sessions: SessionMaker) -> set[str]:
    """Every adapter folder a version points to: none of them may ever be deleted."""
    async with sessions.begin() as session:
        return set((await session.scalars(select(ModelVersion.path))).all())


async def activate_in(
    session: AsyncSession, version: ModelVersion, *, keep_previous: bool = False
) -> None:
    """Make ``version`` the active one of its scope, inside the caller's transaction.

    The version it replaces becomes ``previous_id`` (unless ``keep_previous``: a rollback
    walks back along the chain instead of making a loop).
    """
    current = await _active_in(session, version.guild_id)
    if current is not None and current.id == version.id:
        return
    if current is not None:
        current.active = False
        await session.flush()  # the unique index allows one active row per scope
    if not keep_previous:
        version.previous_id = None if current is None else current.id
    version.active = True
    version.activated_at = utcnow()
    await session.flush()


def new_version(
    *, name: str, path: str, base_model: str, metrics: dict[str, Any], guild_id: int | None
) -> ModelVersion:
    """An inactive row to add to a session (see :func:`activate_in`)."""
    return ModelVersion(
        name=name,
        path=path,
        base_model=base_model,
        metrics=metrics,
        active=False,
        guild_id=guild_id,
    )


async def add_version(
    sessions: SessionMaker,
    *,
    name: str,
    path: str,
    base_model: str,
    metrics: dict[str, Any],
    activate: bool,
    guild_id: int | None = None,
) -> VersionInfo:
    """Insert a model version of ``guild_id``'s scope; with ``activate`` it becomes active."""
    async with sessions.begin() as session:
        v = new_version(
            name=name, path=path, base_model=base_model, metrics=metrics, guild_id=guild_id
        )
        session.add(v)
        await session.flush()
        if activate:
            await activate_in(session, v)
        return _info(v)


async def activate(sessions: SessionMaker, name: str, guild_id: int | None) -> VersionInfo:
    """Activate the version called ``name`` for its scope, which must be ``guild_id``'s
    (``None``: a default version). Raises :class:`VersionError` otherwise."""
    async with sessions.begin() as session:
        v = await session.scalar(select(ModelVersion).where(ModelVersion.name == name))
        if v is None:
            raise VersionError(f"no model version is called {name!r}")
        if v.guild_id != guild_id:
            owner = "the default" if v.guild_id is None else f"server {v.guild_id}"
            wanted = "the default" if guild_id is None else f"server {guild_id}"
            raise VersionError(f"model {name!r} belongs to {owner}, not to {wanted}")
        await activate_in(session, v)
        return _info(v)


async def rollback(sessions: SessionMaker, guild_id: int | None) -> VersionInfo | None:
    """Return ``guild_id``'s scope to the version active before its current one.

    Returns the version now active in the scope, or None when the scope has none left (the
    server uses the default; the default is the shipped adapter). Raises
    :class:`VersionError` when nothing of the scope is active.
    """
    async with sessions.begin() as session:
        current = await _active_in(session, guild_id)
        scope = "the default" if guild_id is None else f"server {guild_id}"
        if current is None:
            raise VersionError(f"{scope} has no model of its own to roll back")
        current.active = False
        await session.flush()
        previous = (
            await session.get(ModelVersion, current.previous_id)
            if current.previous_id is not None
            else None
        )
        if previous is None or previous.guild_id != guild_id:
            return None
        if not await asyncio.to_thread(os.path.isdir, previous.path):
            # Its files were pruned (bot.retrain.retention): the scope falls back to the default.
            log.warning("rollback: %s's folder is gone; %s uses the default", previous.name, scope)
            return None
        await activate_in(session, previous, keep_previous=True)
        return _info(previous)
