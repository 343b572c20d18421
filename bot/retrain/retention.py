"""Retention: what old server runs leave on disk is deleted, the versions a server may return to
are kept.

Each server run leaves an adapter (``<data>/adapters/run-NNNN``, a few MB) and a dataset
(``<data>/datasets/run-NNNN``, about 10 MB), up to one run per server per day. :func:`prune`
keeps, for every scope (each server, and the deployment's default), the active version and the
``keep_previous`` most recent others, each server's latest rejected run (for inspection) and the
folders of runs still queued or running; it deletes the other ``run-*`` folders (older rejected,
failed and superseded runs). Folders not named ``run-*``
(adapters trained by hand) and everything outside those two folders are never touched. The run
logs in ``<data>/runs/`` stay: they are small. The bot prunes after every run
(``[bot] keep_previous_versions``); ``microgenre model prune`` does it by hand.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from bot.store import runs as runs_store
from bot.store import versions as versions_store
from bot.store.engine import SessionMaker
from bot.store.models import RUN_PENDING, RUN_REJECTED, RUN_RUNNING
from bot.store.versions import VersionInfo

log = logging.getLogger(__name__)

RUN_FOLDERS = ("adapters", "datasets")


def kept_versions(versions: list[VersionInfo], keep_previous: int) -> list[VersionInfo]:
    """Per scope: the active version and the ``keep_previous`` most recent others.

    >>> from datetime import datetime
    >>> def v(i, active=False, guild=1):
    ...     return VersionInfo(i, f"v{i}", f"/a/v{i}", "m", {}, active, datetime(2026, 1, i), guild)
    >>> [k.name for k in kept_versions([v(1), v(2), v(3, True), v(4), v(5, guild=2)], 1)]
    ['v3', 'v4', 'v5']
    """
    scopes: dict[int | None, list[VersionInfo]] = defaultdict(list)
    for version in versions:
        scopes[version.guild_id].append(version)
    kept: list[VersionInfo] = []
    for members in scopes.values():
        kept += [v for v in members if v.active]
        others = sorted((v for v in members if not v.active), key=lambda v: v.created_at)
        kept += others[len(others) - keep_previous :] if keep_previous else []
    return sorted(kept, key=lambda v: v.id)


async def prune(
    sessions: SessionMaker,
    data_dir: Path,
    *,
    keep_previous: int,
    dry_run: bool = False,
    also_keep: Iterable[str] = (),
) -> list[Path]:
    """Delete (or, with ``dry_run``, only list) the run folders nothing needs any more;
    ``also_keep`` names more folders to keep (the run that just ended, for inspection)."""
    kept = kept_versions(await versions_store.list_versions(sessions), keep_previous)
    keep_names = {Path(v.path).name for v in kept} | set(also_keep)
    for status in (RUN_PENDING, RUN_RUNNING):
        keep_names |= {f"run-{r.id:04d}" for r in await runs_store.runs_by_status(sessions, status)}
    # Each server's latest rejected adapter stays, for inspection.
    latest_rejected: dict[int | None, int] = {}
    for r in await runs_store.runs_by_status(sessions, RUN_REJECTED):
        latest_rejected[r.guild_id] = max(r.id, latest_rejected.get(r.guild_id, 0))
    keep_names |= {f"run-{run_id:04d}" for run_id in latest_rejected.values()}
    kept_paths = [v.path for v in kept]
    doomed = await asyncio.to_thread(_candidates, data_dir, keep_names, kept_paths)
    if not dry_run:
        for folder in doomed:
            await asyncio.to_thread(shutil.rmtree, folder, True)
        if doomed:
            log.info("retention deleted %d old run folders", len(doomed))
    return doomed


def _candidates(data_dir: Path, keep_names: set[str], kept_paths: list[str]) -> list[Path]:
    resolved = {str(Path(p).resolve()) for p in kept_paths}
    found = []
    for kind in RUN_FOLDERS:
        folder = data_dir / kind
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if not path.is_dir() or not path.name.startswith("run-"):
                continue
            if path.name in keep_names or str(path.resolve()) in resolved:
                continue
            found.append(path)
    return found
