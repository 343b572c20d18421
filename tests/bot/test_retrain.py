"""Retraining: through Discord with fake train/eval scripts, and the manager on its own."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bot.config import BotConfig
from bot.retrain import (
    Progress,
    RetrainManager,
    RetrainRefusedError,
    gate_metrics,
    quality_gate,
)
from bot.retrain.steps import train_event
from bot.service import GenreService
from bot.store import runs as runs_store
from bot.store.generations import attach_message, reserve_generations
from bot.store.models import ModelVersion, TrainingRun
from bot.store.votes import set_vote
from model.events import EvalResult, EventKind
from tests.bot.fakes import ScriptedGenerator, make_config, running_bot
from tests.fake_discord import FakeDiscord
from tests.fake_discord.server import MANAGE_GUILD, MEMBER_PERMISSIONS

pytestmark = pytest.mark.timeout(60)

SCRIPTS = Path(__file__).parent / "scripts"
ADMIN = MEMBER_PERMISSIONS | MANAGE_GUILD


async def next_outcome(fake: FakeDiscord, manager: RetrainManager, before: Any) -> Any:
    """The outcome of the run started after the run task ``before`` (None: the first)."""
    await fake.wait_for(lambda: manager.control.task not in (None, before))
    return await manager.wait()


def commands(
    mode: str = "ok", delay: float = 0.0, well: float = 0.9, novel: float = 0.7
) -> dict[str, Any]:
    return {
        "train_command": [sys.executable, str(SCRIPTS / "fake_train.py"), mode, str(delay)],
        "eval_command": [sys.executable, str(SCRIPTS / "fake_eval.py"), str(well), str(novel)],
    }


async def seed_votes(sessions: Any) -> None:
    """'liked genre' +3, 'split genre' +2 but 3 downvotes, 'meh genre' +1."""
    names = ["liked genre", "split genre", "meh genre"]
    reserved = await reserve_generations(
        sessions,
        names,
        guild_id=1000,
        channel_id=2000,
        user_id=1,
        model_name="m",
        model_version_id=None,
        options={},
    )
    votes = {"liked genre": [1, 1, 1], "split genre": [1] * 5 + [-1] * 3, "meh genre": [1]}
    for i, r in enumerate(reserved):
        assert r.generation_id is not None
        await attach_message(sessions, r.generation_id, message_id=10 + i, channel_id=2000)
        for user, value in enumerate(votes[r.name], start=100):
            await set_vote(sessions, r.generation_id, user, value)


async def test_retrain_from_discord_activates_a_passing_adapter(
    fake_discord: FakeDiscord, sessions: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", "secret-token")
    await seed_votes(sessions)
    gen = ScriptedGenerator()
    config = make_config(tmp_path)
    async with running_bot(config, sessions, gen, retrainer_options=commands()) as running:
        admin = fake_discord.member("admin")
        inter = await fake_discord.invoke(admin, "retrain", "start", permissions=ADMIN)
        result = await fake_discord.wait_for(
            lambda: [c for c in fake_discord.calls_matching("POST", "/channels/2000/messages")]
        )
        outcome = await running.retrainer.wait()
    assert outcome.status == "succeeded", outcome.reason
    [post] = result
    assert post.files == ["loss_curve.png"]
    embed = post.json["embeds"][0]
    assert "succeeded" in embed["title"]
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert (
        fields["Well-formed"] == "0.90 (active: 0.90)" and fields["Novel"] == "0.70 (active: 0.60)"
    )
    # The progress message (the deferred reply) was edited with a bar, step and loss.
    edits = [
        c.json["content"]
        for c in fake_discord.calls
        if c.method == "PATCH" and inter.token in c.path and c.json and c.json.get("content")
    ]
    assert any("step 3/6" in e and "loss 1.000" in e and "%" in e for e in edits)
    # The worker loaded it before it was activated for this server.
    adapter = tmp_path / "data" / "adapters" / "run-0001"
    assert gen.prepared == [str(adapter)]
    async with sessions.begin() as s:
        version = (await s.execute(select(ModelVersion))).scalar_one()
        run = (await s.execute(select(TrainingRun))).scalar_one()
    assert version.active and version.path == str(adapter) and version.metrics["novel"] == 0.7
    assert version.guild_id == 1000 and version.name == "guild-1000-run-0001"
    assert run.status == "succeeded" and run.model_version_id == version.id
    served = await running.service.model_for(1000)
    assert served is not None and served.id == version.id
    # The deployment default is untouched.
    assert running.service.active_version is None
    # A server run from the server's current model (the default: no --from-adapter) on this
    # server's votes, net score > 0 meaning 👍.
    votes = [json.loads(line) for line in (adapter / "votes.jsonl").read_text().splitlines()]
    assert sorted((v["name"], v["label"]) for v in votes) == [
        ("liked genre", "up"),
        ("meh genre", "up"),
        ("split genre", "up"),
    ]
    argv = json.loads((adapter / "argv.json").read_text())
    assert "--votes" in argv and "--from-adapter" not in argv and "--extra-genres" not in argv
    # The training process never sees the Discord token.
    assert json.loads((adapter / "env.json").read_text()) == {"DISCORD_TOKEN": None}


async def test_gate_rejection_failure_busy_and_cancel(
    fake_discord: FakeDiscord, sessions: Any, tmp_path: Path
) -> None:
    gen = ScriptedGenerator()
    config = make_config(tmp_path)
    async with running_bot(
        config, sessions, gen, retrainer_options=commands("ok", 0.0, well=0.5)
    ) as running:
        admin = fake_discord.member("admin")
        await fake_discord.invoke(admin, "retrain", "start", permissions=ADMIN)
        outcome = await next_outcome(fake_discord, running.retrainer, None)
        assert outcome.status == "rejected"
        assert "well-formed rate 0.50 is below the minimum 0.80" in outcome.reason
        assert gen.prepared == []

        # A failing trainer: the reason is reported, the active model keeps serving.
        running.retrainer.train_command = commands("fail")["train_command"]
        before = running.retrainer.control.task
        await fake_discord.invoke(admin, "retrain", "start", permissions=ADMIN)
        outcome = await next_outcome(fake_discord, running.retrainer, before)
        assert outcome.status == "failed" and "CUDA out of memory" in outcome.reason

        # A slow run: a second request is told the progress; cancel stops it.
        running.retrainer.train_command = commands("ok", 1.0)["train_command"]
        await fake_discord.invoke(admin, "retrain", "start", permissions=ADMIN)
        await fake_discord.wait_for(lambda: running.retrainer.running)
        # Let the trainer get going (it has written a checkpoint folder by its first step).
        await fake_discord.wait_for(
            lambda: running.retrainer.progress is not None and running.retrainer.progress.step >= 1
        )
        assert (tmp_path / "data" / "adapters" / "run-0003.work").is_dir()
        second = await fake_discord.invoke(admin, "retrain", "start", permissions=ADMIN)
        await fake_discord.wait_for(
            lambda: [
                c
                for c in fake_discord.calls
                if second.token in c.path and c.method == "POST" and c.json and "flags" in c.json
            ]
        )
        busy = [
            c.json["content"]
            for c in fake_discord.calls
            if second.token in c.path and c.method == "POST" and c.json and "flags" in c.json
        ]
        assert "already in progress" in busy[0] and "run #3" in busy[0]
        cancel = await fake_discord.invoke(admin, "retrain", "cancel", permissions=ADMIN)
        await fake_discord.wait_for(lambda: fake_discord.original(cancel) is not None)
        outcome = await running.retrainer.wait()
        assert outcome.status == "cancelled" and "cancelled by" in outcome.reason
        status = await fake_discord.invoke(admin, "retrain", "status", permissions=ADMIN)
        await fake_discord.wait_for(lambda: fake_discord.original(status) is not None)
        reply = fake_discord.original(status)
        assert reply is not None and "#3: **cancelled**" in reply["content"]
    async with sessions.begin() as s:
        statuses = (await s.execute(select(TrainingRun.status).order_by(TrainingRun.id))).all()
        assert [r[0] for r in statuses] == ["rejected", "failed", "cancelled"]
        assert (await s.execute(select(ModelVersion))).first() is None
    # The rejected adapter is kept for inspection; the failed and cancelled runs' half-made
    # outputs are gone, their logs stay.
    adapters = tmp_path / "data" / "adapters"
    assert sorted(p.name for p in adapters.iterdir()) == ["run-0001"]
    for run in ("run-0002", "run-0003"):
        assert (tmp_path / "data" / "runs" / run / "train.log").is_file()


async def test_interrupted_run_is_marked_failed_at_startup(
    fake_discord: FakeDiscord, sessions: Any, tmp_path: Path
) -> None:
    info = await runs_store.create_run(
        sessions, requested_by=1, guild_id=1, channel_id=1, options={}
    )
    assert info is not None
    await runs_store.update_run(sessions, info.id, status="running")
    async with running_bot(make_config(tmp_path), sessions, ScriptedGenerator()):
        pass
    run = await runs_store.get_run(sessions, info.id)
    assert run is not None and run.status == "failed" and "restarted" in (run.error or "")


async def test_progress_reports_are_throttled(sessions: Any, tmp_path: Path) -> None:
    config = make_config(tmp_path, progress_edit_interval_s=60.0)
    service = GenreService(ScriptedGenerator(), sessions)
    manager = RetrainManager(config, sessions, service, **commands())
    reports: list[Progress] = []

    async def on_progress(p: Progress) -> None:
        reports.append(Progress(p.run_id, phase=p.phase, step=p.step))

    await manager.start(requested_by=1, guild_id=1, channel_id=1, on_progress=on_progress)
    with pytest.raises(RetrainRefusedError, match="already in progress"):
        await manager.start(requested_by=2, guild_id=1, channel_id=1)
    outcome = await manager.wait()
    assert outcome is not None and outcome.status == "succeeded"
    # Six steps and two epochs, but only the forced reports: start, done, evaluating, activating.
    assert [(r.phase, r.step) for r in reports] == [
        ("training", 0),
        ("training", 6),
        ("evaluating", 6),
        ("activating", 6),
    ]


@pytest.mark.parametrize(
    ("stop", "status"),
    [
        ("shutdown", "failed"),
        ("cancel", "cancelled"),
        ("cancel-with-shut-down-in-the-reason", "cancelled"),
    ],
)
async def test_a_stopped_run_is_failed_by_shutdown_and_cancelled_by_an_admin(
    sessions: Any, tmp_path: Path, stop: str, status: str
) -> None:
    service = GenreService(ScriptedGenerator(), sessions)
    manager = RetrainManager(make_config(tmp_path), sessions, service, **commands("ok", 1.0))
    training = asyncio.Event()

    async def on_progress(progress: Progress) -> None:
        if progress.phase == "training":
            training.set()

    await manager.start(requested_by=1, guild_id=1, channel_id=1, on_progress=on_progress)
    await training.wait()
    if stop == "shutdown":
        await manager.shutdown()
    else:
        await manager.cancel(1, "an admin shut down the idea" if "shut" in stop else "not now")
    outcome = await manager.wait()
    assert outcome is not None and outcome.status == status
    run = await runs_store.get_run(sessions, outcome.run_id)
    assert run is not None and run.status == status


def test_quality_gate_bounds() -> None:
    bounds = BotConfig(gate_min_well_formed=0.8, gate_min_novel=0.5, gate_max_regression=0.05)
    assert quality_gate(
        {"well_formed": 0.86, "novel": 0.55}, {"well_formed": 0.9, "novel": 0.6}, bounds
    ) == (True, [])
    ok, reasons = quality_gate(
        {"well_formed": 0.84, "novel": 0.7}, {"well_formed": 0.95, "novel": 0.6}, bounds
    )
    assert not ok and reasons == ["well-formed rate 0.84 is worse than the active model's 0.95"]
    assert quality_gate({}, None, bounds)[0] is False


def test_the_default_eval_command_samples_gate_samples(sessions: Any, tmp_path: Path) -> None:
    """The gate's evaluation samples `[bot] gate_samples` genres per adapter (default 300)."""
    service = GenreService(ScriptedGenerator(), sessions)
    for options, n in (({}, "300"), ({"gate_samples": 120}, "120")):
        manager = RetrainManager(make_config(tmp_path, **options), sessions, service)
        command = manager.plan.eval_command
        assert command[command.index("eval") :].count("-n") == 1
        assert command[command.index("-n") + 1] == n
    with pytest.raises(ValueError, match="gate_samples"):
        BotConfig(gate_samples=5).validate()


def test_gate_reads_the_models_raw_rates_of_an_eval_result() -> None:
    table = {"raw": {"n": 10, "well_formed": 1, "novel": 0.5}}
    result = EvalResult.from_json(EvalResult(10, "a", "valid", 9, 1, 0.85, table).to_json())
    assert gate_metrics(result) == {"well_formed": 1.0, "novel": 0.5}
    with pytest.raises(ValueError, match="not an evaluation result"):
        EvalResult.from_dict({**result.to_dict(), "model": {"raw": {"well_formed": 0.5}}})
    with pytest.raises(ValueError, match="not an evaluation result"):
        EvalResult.from_dict({"model": table})


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        (b'{"event": "step", "step": 2, "total_steps": 6, "loss": 1.5}\n', EventKind.STEP),
        (b'{"event": "done", "step": 6, "stop_reason": "completed"}', EventKind.DONE),
        (b"loading weights...", None),
        (b'{"event": "unheard-of"}', None),
        (b'{"event": "step", "stop_reason": "bored"}', None),
        (b"{not json", None),
    ],
)
def test_train_output_lines_are_events_or_ignored(line: bytes, kind: EventKind | None) -> None:
    event = train_event(line)
    assert (event.event if event is not None else None) == kind


async def test_shutdown_right_after_a_cancel_returns_and_releases_the_lease(
    sessions: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bot stopped (SIGTERM) just after an admin's cancel: the run's task may end
    cancelled, which ``contextlib.suppress(Exception)`` does not catch; shutdown must still
    return, and the training slot must be free."""
    from bot.retrain.progress import RunRecord

    service = GenreService(ScriptedGenerator(), sessions)
    manager = RetrainManager(make_config(tmp_path), sessions, service, **commands("ok", 1.0))
    training, finishing = asyncio.Event(), asyncio.Event()
    finish = RunRecord.finish

    async def slow_finish(self: RunRecord, outcome: Any) -> None:
        finishing.set()
        await asyncio.sleep(0.5)
        await finish(self, outcome)

    monkeypatch.setattr(RunRecord, "finish", slow_finish)

    async def on_progress(progress: Progress) -> None:
        if progress.phase == "training":
            training.set()

    await manager.start(requested_by=1, guild_id=1, channel_id=1, on_progress=on_progress)
    await training.wait()
    await manager.cancel(1, "not now")
    await finishing.wait()
    task = manager.control.task
    assert task is not None
    task.cancel()  # the bot's loop cancels what is still running as it stops
    await manager.shutdown()
    assert task.cancelled()
    holder, _ = await runs_store.lease_holder(sessions)
    assert holder is None


async def test_run_errors_stay_out_of_public_messages(
    fake_discord: FakeDiscord, sessions: Any, tmp_path: Path
) -> None:
    """A failed run's details (log lines, paths, URLs) go to the log and to the bot owner's
    `/retrain status`; the channel and the server's other admins see a generic failure."""
    owner = fake_discord.member("owner")
    config = make_config(tmp_path, owner_ids=(owner.id,))
    async with running_bot(config, sessions, retrainer_options=commands("fail")) as running:
        admin = fake_discord.member("admin")
        await fake_discord.invoke(admin, "retrain", "start", permissions=ADMIN)
        await fake_discord.wait_for(lambda: running.retrainer.control.task is not None)
        outcome = await running.retrainer.wait()
        assert outcome is not None and "CUDA out of memory" in outcome.reason
        posted = await fake_discord.wait_for(
            lambda: [m for m in fake_discord.messages.values() if m.get("embeds")]
        )
        public = json.dumps([m["embeds"] for m in posted])
        assert "failed" in public and "CUDA" not in public

        async def status_as(user: Any) -> str:
            inter = await fake_discord.invoke(user, "retrain", "status", permissions=ADMIN)
            reply = await fake_discord.wait_for(lambda: fake_discord.original(inter))
            assert reply["_ephemeral"]
            return str(reply["content"])

        assert "CUDA" not in await status_as(admin)
        assert "CUDA out of memory" in await status_as(owner)
