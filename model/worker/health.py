"""Worker health for other processes (``microgenre stats --json``).

The process that owns a local worker writes :meth:`WorkerClient.health` to
``<data_dir>/worker_health.json`` every couple of seconds and when it closes (:class:`HealthFile`);
:func:`worker_health` reads that snapshot (local transport) or asks the server's ``/health``
(remote transport).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HEALTH_FILE = "worker_health.json"


def write_snapshot(path: Path, data: dict[str, Any]) -> None:
    """Atomically replace ``path`` with ``data`` as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, default=str), encoding="utf-8")
    os.replace(tmp, path)


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_snapshot(path: Path) -> dict[str, Any]:
    """The last snapshot, marked stale (not alive) when the process that wrote it is gone."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"transport": "local", "alive": False, "state": "not running"}
    except (OSError, ValueError):
        return {"transport": "local", "alive": False, "state": "unreadable health file"}
    if not isinstance(data, dict):
        return {"transport": "local", "alive": False, "state": "unreadable health file"}
    written = data.pop("written_at", None)
    if isinstance(written, int | float):
        data["snapshot_age_s"] = round(time.time() - written, 1)
    if data.get("state") != "closed" and not _pid_alive(data.get("owner_pid")):
        data["state"] = "stopped (its process is gone)"
        data["alive"] = False
    return data


async def worker_health(config: Any, *, timeout_s: float = 3.0) -> dict[str, Any]:
    """Health of the worker the configuration points at, without starting one."""
    worker = config.worker
    if worker.transport == "remote":
        from model.worker.remote import RemoteClient

        client = RemoteClient(
            worker.url, worker.api_token, model=worker.remote_model, request_timeout_s=timeout_s
        )
        async with client:
            data = await client.fetch_health()
        data.pop("client", None)
        return data
    return await asyncio.to_thread(read_snapshot, Path(config.data_dir) / HEALTH_FILE)


def snapshot_quietly(path: Path, data: dict[str, Any]) -> None:
    """:func:`write_snapshot` that never raises (health reporting must not break serving)."""
    with contextlib.suppress(OSError):
        write_snapshot(path, data)


class HealthFile:
    """Writes a client's health for other processes: every ``interval_s``, and on request."""

    def __init__(self, path: Path, interval_s: float = 2.0) -> None:
        self.path = path
        self.interval_s = interval_s

    async def write(self, data: dict[str, Any]) -> None:
        data = dict(data, owner_pid=os.getpid(), written_at=time.time())
        await asyncio.to_thread(snapshot_quietly, self.path, data)

    async def run(self, health: Callable[[], dict[str, Any]]) -> None:
        """Task: write ``health()`` now and every ``interval_s`` until cancelled."""
        while True:
            await self.write(health())
            await asyncio.sleep(self.interval_s)
