"""Model changes told to every bot process at once: PostgreSQL ``LISTEN``/``NOTIFY``.

An activation or rollback commits in one process; the others resolve a server's model from a
cache (``GenreService.model_cache_s``). On PostgreSQL :func:`announce` sends the scope that
changed (a guild id, or ``default``) on :data:`CHANNEL` after the commit, and each process's
:class:`ModelChangeListener` drops that entry at once. On SQLite (one machine, usually one
process) both do nothing and the cache's time limit is the fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.store.engine import SessionMaker
from bot.tasks import cancel_and_wait

log = logging.getLogger(__name__)

CHANNEL = "microgenre_models"
DEFAULT_SCOPE = "default"
# Seconds between attempts to listen again after the connection was lost (doubling to 30).
RETRY_S = 1.0


def scope_payload(guild_id: int | None) -> str:
    """The notification's payload for a scope.

    >>> scope_payload(None), scope_payload(42)
    ('default', '42')
    """
    return DEFAULT_SCOPE if guild_id is None else str(guild_id)


def parse_payload(payload: str) -> int | None:
    """The scope a payload names; raises ValueError for anything else.

    >>> parse_payload("default"), parse_payload("42")
    (None, 42)
    """
    return None if payload == DEFAULT_SCOPE else int(payload)


def _engine(sessions: SessionMaker) -> AsyncEngine:
    bind = sessions.kw["bind"]
    assert isinstance(bind, AsyncEngine)
    return bind


async def announce(sessions: SessionMaker, guild_id: int | None) -> None:
    """Tell every listening process that ``guild_id``'s model changed (PostgreSQL only)."""
    if _engine(sessions).dialect.name != "postgresql":
        return
    async with sessions.begin() as session:
        await session.execute(
            text("SELECT pg_notify(:channel, :payload)"),
            {"channel": CHANNEL, "payload": scope_payload(guild_id)},
        )


class ModelChangeListener:
    """Calls ``on_change(scope)`` for every model change another process announces."""

    def __init__(self, sessions: SessionMaker, on_change: Callable[[int | None], None]) -> None:
        self.engine = _engine(sessions)
        self.on_change = on_change
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()

    def start(self) -> bool:
        """Start listening (PostgreSQL); whether there is anything to listen to."""
        if self.engine.dialect.name != "postgresql":
            return False
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._listen(), name="model-change-listener"
            )
        return True

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            scope = parse_payload(payload)
        except ValueError:
            log.warning("ignoring a model-change notification %r", payload)
            return
        self.on_change(scope)

    async def _listen(self) -> None:
        import asyncpg

        dsn = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        delay = RETRY_S
        while True:
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(dsn, timeout=10)
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                log.warning("cannot listen for model changes (%s); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(30.0, delay * 2)
                continue
            try:
                conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await conn.add_listener(CHANNEL, self._notified)
                delay = RETRY_S
                self.listening.set()
                # Changes made while not listening were missed: resolve everything again.
                self.on_change(None)
                await lost.wait()
                log.warning("lost the model-change connection; listening again")
            finally:
                self.listening.clear()
                with contextlib.suppress(Exception):
                    await conn.close(timeout=5)

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
