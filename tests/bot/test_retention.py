"""Retention: old server-run folders are deleted, the active and previous versions are kept."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from bot.retrain.retention import prune
from bot.store import runs as runs_store
from bot.store import versions as versions_store


def _folders(data: Path, kind: str) -> list[str]:
    return sorted(p.name for p in (data / kind).iterdir())


async def test_prune_keeps_the_active_and_previous_versions_and_live_runs(
    sessions: Any, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    for kind in ("adapters", "datasets"):
        for n in range(1, 6):
            (data / kind / f"run-{n:04d}").mkdir(parents=True)
    (data / "adapters" / "my-own").mkdir()  # trained by hand: never a retention candidate
    # Server 1 activated runs 1, 2 and 3 in turn; run 4 failed, but its folders stayed (a
    # crash before its clean-up).
    for n in (1, 2, 3):
        await versions_store.add_version(
            sessions,
            name=f"guild-1-run-{n:04d}",
            path=str(data / "adapters" / f"run-{n:04d}"),
            base_model="m",
            metrics={},
            activate=True,
            guild_id=1,
        )
    # Run 5 of server 2 is queued: its folders are in use.
    for status in ("succeeded", "succeeded", "succeeded", "failed"):
        run = await runs_store.create_run(
            sessions, requested_by=1, guild_id=1, channel_id=1, options={}
        )
        assert run is not None
        await runs_store.update_run(sessions, run.id, status=status)
    live = await runs_store.create_run(
        sessions, requested_by=1, guild_id=2, channel_id=1, options={}
    )
    assert live is not None and live.id == 5

    planned = await prune(sessions, data, keep_previous=1, dry_run=True)
    assert sorted(p.name for p in planned) == ["run-0001", "run-0001", "run-0004", "run-0004"]
    assert _folders(data, "adapters") == [
        "my-own",
        "run-0001",
        "run-0002",
        "run-0003",
        "run-0004",
        "run-0005",
    ]

    deleted = await prune(sessions, data, keep_previous=1)
    assert sorted(str(p.relative_to(data)) for p in deleted) == [
        "adapters/run-0001",
        "adapters/run-0004",
        "datasets/run-0001",
        "datasets/run-0004",
    ]
    assert _folders(data, "adapters") == ["my-own", "run-0002", "run-0003", "run-0005"]
    assert _folders(data, "datasets") == ["run-0002", "run-0003", "run-0005"]

    # Rolling back walks to run 2 (kept); past it lies a pruned folder: the server goes back
    # to the default model instead of to a version whose files are gone.
    back = await versions_store.rollback(sessions, 1)
    assert back is not None and back.name == "guild-1-run-0002"
    assert await versions_store.rollback(sessions, 1) is None


async def test_model_prune_command_and_the_bot_prune_after_a_run(
    sessions: Any, tmp_path: Path, sqlite_url: str
) -> None:
    from bot.cli import entry
    from bot.retrain import RetrainManager
    from bot.service import GenreService
    from tests.bot.fakes import ScriptedGenerator, make_config
    from tests.bot.test_retrain import commands

    data = tmp_path / "data"
    for n in (1, 2):
        (data / "adapters" / f"run-{n:04d}").mkdir(parents=True)
    config_file = tmp_path / "config.toml"
    config_file.write_text(
        f'[database]\nurl = "{sqlite_url}"\n[paths]\ndata_dir = "{data}"\n'
        "[bot]\nkeep_previous_versions = 0\n"
    )
    argv = ["--config", str(config_file), "model", "prune"]
    assert await asyncio.to_thread(entry, [*argv, "--dry-run"]) == 0
    assert (data / "adapters" / "run-0001").is_dir()
    assert await asyncio.to_thread(entry, argv) == 0
    assert not (data / "adapters" / "run-0001").exists()

    # After each run the bot prunes too, keeping the run that just ended (for inspection).
    (data / "adapters" / "run-0009").mkdir()
    config = make_config(tmp_path, keep_previous_versions=0)
    service = GenreService(ScriptedGenerator(), sessions)
    manager = RetrainManager(config, sessions, service, **commands("ok", well=0.1))
    await manager.start(requested_by=1, guild_id=5, channel_id=1)
    outcome = await manager.wait()
    assert outcome is not None and outcome.status == "rejected"
    adapters = sorted(p.name for p in (data / "adapters").iterdir())
    assert adapters == [f"run-{outcome.run_id:04d}"]
    await manager.shutdown()
