"""Retraining end to end with the real model: train → eval → gate → activate → hot reload.

No fake scripts: `microgenre train` (2 steps) and `microgenre eval` run as the subprocesses the
bot starts, on SmolLM2 and the real genres of ../shared/data, and the new adapter is hot-loaded
into a real worker process. Slow (a few minutes on 2 cores): marked ``integration``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import BotConfig, load_config
from bot.retrain import RetrainManager, quality_gate
from bot.service import GenreService, create_generator
from bot.store import runs as runs_store
from bot.store.engine import create_engine, create_sessionmaker

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]


def microgenre(config: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "bot", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


async def test_real_retrain_activates_and_hot_reloads(tmp_path: Path, shared_data: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    # Reuse the converted base model of the repository's data folder (made on first use).
    (REPO / "data" / "models").mkdir(parents=True, exist_ok=True)
    (data / "models").symlink_to(REPO / "data" / "models")
    config_file = tmp_path / "config.toml"
    train = [sys.executable, "-m", "bot", "--config", str(config_file), "train", "--max-steps", "2"]
    config_file.write_text(
        f"[paths]\ndata_dir = {json.dumps(str(data))}\n"
        f"[bot]\ntrain_command = {json.dumps(train)}\n"
        # Two training steps cannot beat the shipped adapter: let the gate pass anything.
        "gate_min_well_formed = 0.0\ngate_min_novel = 0.0\ngate_max_regression = 1.0\n"
    )
    microgenre(config_file, "db", "upgrade")
    microgenre(config_file, "scrape", "--source", "all", "--from", str(shared_data))
    config = load_config(config_file)
    engine = create_engine(config.database_url)
    sessions = create_sessionmaker(engine)
    generator = await create_generator(config)
    service = GenreService(generator, sessions)
    try:
        shipped = generator.health()["adapter"]
        await service.start()
        manager = RetrainManager(config, sessions, service)
        await manager.start(requested_by=1, guild_id=1, channel_id=1)
        outcome = await asyncio.wait_for(manager.wait(), 900)
        assert outcome is not None
        assert outcome.status == "succeeded", outcome.reason
        adapter = data / "adapters" / "run-0001"
        # Real numbers from `microgenre eval` for the new and the shipped adapter.
        for metrics in (outcome.metrics, outcome.baseline):
            assert set(metrics) == {"well_formed", "novel"}
            assert all(0.0 <= value <= 1.0 for value in metrics.values())
        assert outcome.baseline["well_formed"] > 0.5  # the shipped adapter is good
        # Two steps are not enough: the default gate would have kept the shipped adapter.
        passed, reasons = quality_gate(outcome.metrics, outcome.baseline, BotConfig())
        assert not passed and reasons
        card = json.loads((adapter / "model_card.json").read_text())
        assert card["base_model"] and card["data"]["train_examples"] > 5000
        # Activated in the store and hot-reloaded into the running worker.
        active = await runs_store.active_version(sessions)
        assert active is not None and active.path == str(adapter)
        assert generator.health()["adapter"] == str(adapter) != shipped
        assert service.active_version == (active.id, active.name)
        assert outcome.progress is not None and outcome.progress.step == 2
    finally:
        await service.close()
        await engine.dispose()
