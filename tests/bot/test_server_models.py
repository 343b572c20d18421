"""Per-server models: each server's run changes only its model, the DB queue, refusals,
rollback, and a stop at every phase leaving the store and the worker in agreement."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest

from bot.cli import entry
from bot.cogs.admin import run_text
from bot.retrain import NoRunError, Progress, RetrainManager, RetrainRefusedError
from bot.service import GenreRequest, GenreService
from bot.store import runs as runs_store
from bot.store import versions as versions_store
from bot.store.engine import SessionMaker
from bot.store.generations import attach_message, reserve_generations
from bot.store.versions import VersionError
from bot.store.votes import set_vote
from model.protocol import AdapterRef
from tests.bot.fakes import ScriptedGenerator, make_config
from tests.bot.test_migrations import postgres_url  # noqa: F401 (fixture)

pytestmark = pytest.mark.timeout(60)

SCRIPTS = Path(__file__).parent / "scripts"
A, B = 111, 222


@pytest.fixture
def sessions(both_stores: SessionMaker) -> SessionMaker:
    return both_stores


def scripts(delay: float = 0.0, eval_delay: float = 0.0) -> dict[str, Any]:
    return {
        "train_command": [sys.executable, str(SCRIPTS / "fake_train.py"), "ok", str(delay)],
        "eval_command": [
            sys.executable,
            str(SCRIPTS / "fake_eval.py"),
            "0.9",
            "0.7",
            str(eval_delay),
        ],
    }


def harness(
    sessions: Any, tmp_path: Path, gen: ScriptedGenerator | None = None, **options: Any
) -> tuple[GenreService, RetrainManager]:
    bot_options = {k: options.pop(k) for k in list(options) if k.startswith("retrain_")}
    service = GenreService(gen or ScriptedGenerator(), sessions, model_cache_s=0.0)
    manager = RetrainManager(
        make_config(tmp_path, **bot_options),
        sessions,
        service,
        lease_s=3.0,
        poll_s=0.1,
        **{**scripts(), **options},
    )
    return service, manager


async def seed_votes(sessions: Any, guild_id: int, votes: int, start: int = 0) -> None:
    names = [f"guild {guild_id} genre {i}" for i in range(start, start + votes)]
    reserved = await reserve_generations(
        sessions,
        names,
        guild_id=guild_id,
        channel_id=guild_id + 1,
        user_id=1,
        model_name="m",
        model_version_id=None,
        options={},
    )
    for i, r in enumerate(reserved):
        assert r.generation_id is not None
        await attach_message(
            sessions, r.generation_id, message_id=guild_id * 1000 + start + i, channel_id=1
        )
        await set_vote(sessions, r.generation_id, 7, 1 if i % 2 else -1)


async def start(manager: RetrainManager, guild_id: int, **kw: Any) -> Progress:
    return await manager.start(requested_by=1, guild_id=guild_id, channel_id=1, **kw)


async def generate_for(service: GenreService, gen: ScriptedGenerator, guild: int) -> Any:
    gen.enqueue([f"new genre {len(gen.calls)}"])
    delivery = await service.deliver(GenreRequest(1, guild_id=guild, user_id=5))
    return gen.calls[-1]["adapter"], delivery


async def test_only_the_servers_model_changes_and_survives_a_restart(
    sessions: Any, tmp_path: Path
) -> None:
    gen = ScriptedGenerator()
    service, manager = harness(sessions, tmp_path, gen)
    await start(manager, A)
    outcome = await manager.wait()
    assert outcome is not None
    assert outcome.status == "succeeded", outcome.reason
    adapter = str(tmp_path / "data" / "adapters" / "run-0001")
    expected = AdapterRef("guild-111-run-0001", adapter)
    # A's requests name A's adapter; B's name none (the worker's default); the default is as
    # it was.
    ref_a, delivery = await generate_for(service, gen, A)
    assert ref_a == expected and delivery.model_name == expected.name
    assert delivery.model_version_id is not None
    ref_b, delivery_b = await generate_for(service, gen, B)
    assert ref_b is None and delivery_b.model_version_id is None
    assert await versions_store.active_version(sessions, None) is None
    # A restart: a new service over the same store serves A's model again.
    gen2 = ScriptedGenerator()
    service2 = GenreService(gen2, sessions)
    await service2.start()
    assert (await generate_for(service2, gen2, A))[0] == expected
    assert await asyncio.to_thread(Path(adapter).is_dir)
    await manager.shutdown()


async def test_queue_is_fifo_with_positions_and_servers_do_not_see_each_other(
    sessions: Any, tmp_path: Path
) -> None:
    _, manager = harness(sessions, tmp_path, **scripts(delay=0.3))
    started = asyncio.Event()

    async def on_a(progress: Progress) -> None:
        if progress.phase == "training":
            started.set()

    told: list[int | None] = []

    async def on_b(progress: Progress) -> None:
        told.append(progress.position)

    first = await start(manager, A, on_progress=on_a)
    second = await start(manager, B, on_progress=on_b)
    assert first.phase != "queued" and second.phase == "queued" and second.position == 1
    await started.wait()
    # B's admin sees only B's own queued run, nothing of A's; a cancel from another server
    # reaches only that server's run.
    assert f"#{first.run_id}" not in await run_text(sessions, B)
    assert f"#{second.run_id}" in await run_text(sessions, B)
    assert manager.progress_of(B) is None
    with pytest.raises(NoRunError):
        await manager.cancel(444, "not mine")
    assert manager.progress_of(A) is not None
    third = await start(manager, 333)
    assert third.position == 2
    # A's cancel lets B train next; the third server moves up to position 1.
    await manager.cancel(A, "not now")
    await manager.wait()
    await asyncio.wait_for(_until(lambda: manager.progress_of(B) is not None), 10)
    assert await runs_store.queue_position(sessions, third.run_id) == 1
    with pytest.raises(NoRunError):
        await manager.cancel(A, "again")
    await manager.shutdown()
    run_a = await runs_store.get_run(sessions, first.run_id)
    assert run_a is not None and run_a.status == "cancelled"


async def _until(condition: Any) -> None:
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.05)


async def test_cooldown_and_min_votes_refusals_say_why_and_when(
    sessions: Any, tmp_path: Path
) -> None:
    _, manager = harness(sessions, tmp_path, retrain_min_votes=4, retrain_cooldown_h=24.0)
    await seed_votes(sessions, A, 3)
    with pytest.raises(RetrainRefusedError, match="has 3 votes so far; retraining needs 4"):
        await start(manager, A)
    await seed_votes(sessions, A, 2, start=3)
    await start(manager, A)
    outcome = await manager.wait()
    assert outcome is not None and outcome.status == "succeeded"
    with pytest.raises(RetrainRefusedError, match=r"possible from .* UTC") as refused:
        await start(manager, A)
    assert refused.value.retry_at is not None
    # Another server is not bound by A's cool-down, only by its own votes.
    with pytest.raises(RetrainRefusedError, match="has 0 votes"):
        await start(manager, B)
    await manager.shutdown()


async def test_rollback_returns_to_the_previous_model_then_the_default(
    sessions: Any, tmp_path: Path
) -> None:
    gen = ScriptedGenerator()
    service, manager = harness(sessions, tmp_path, gen)
    for _ in range(2):
        await start(manager, A)
        outcome = await manager.wait()
        assert outcome is not None and outcome.status == "succeeded"
    assert (await generate_for(service, gen, A))[0].name == "guild-111-run-0002"
    back = await versions_store.rollback(sessions, A)
    assert back is not None and back.name == "guild-111-run-0001"
    service.model_changed(A)
    assert (await generate_for(service, gen, A))[0].name == "guild-111-run-0001"
    assert await versions_store.rollback(sessions, A) is None
    assert (await generate_for(service, gen, A))[0] is None
    with pytest.raises(VersionError, match="no model of its own"):
        await versions_store.rollback(sessions, A)
    await manager.shutdown()


@pytest.mark.parametrize("how", ["cancel", "shutdown"])
@pytest.mark.parametrize("phase", ["queued", "training", "evaluating", "activating", "activated"])
async def test_a_stop_at_any_phase_leaves_store_and_worker_agreeing(
    sessions: Any, tmp_path: Path, phase: str, how: str
) -> None:
    gen = ScriptedGenerator()
    service, manager = harness(sessions, tmp_path, gen, **scripts(delay=0.2, eval_delay=0.5))
    reached = asyncio.Event()

    async def on_progress(progress: Progress) -> None:
        if progress.phase == phase:
            reached.set()

    async def stop() -> None:
        if how == "cancel":
            try:
                await manager.cancel(A, "stop")
            except NoRunError:  # after the commit the run has succeeded: nothing to cancel
                assert phase == "activated"
        else:
            await manager.shutdown()

    if phase == "queued":
        await start(manager, B)  # holds the slot, so A waits
        run = await start(manager, A)
        assert run.phase == "queued"
        await stop()
    elif phase == "activated":
        # A stop right after the commit: the run has succeeded and its folder stays.
        commit = runs_store.finish_activated

        stopping: list[asyncio.Task[None]] = []

        async def commit_then_stop(*args: Any, **kwargs: Any) -> Any:
            version = await commit(*args, **kwargs)
            # As a signal handler would: from outside the run.
            stopping.append(asyncio.get_running_loop().create_task(stop()))
            await asyncio.sleep(0.05)
            return version

        runs_store.finish_activated = commit_then_stop
        try:
            await start(manager, A)
            await manager.wait()
            await asyncio.gather(*stopping)
        finally:
            runs_store.finish_activated = commit
    else:
        if phase == "activating":
            # Stop while the worker loads the new adapter, before the commit.
            prepare = gen.prepare

            async def slow_prepare(adapter: AdapterRef) -> None:
                reached.set()
                await asyncio.sleep(0.3)
                await prepare(adapter)

            gen.prepare = slow_prepare  # type: ignore[method-assign]
        await start(manager, A, on_progress=on_progress)
        await reached.wait()
        await stop()
        await manager.wait()
    await manager.shutdown()
    # Agreement: what the store says A uses is what A's requests name, and it exists.
    active = await versions_store.serving_version(sessions, A)
    ref, _ = await generate_for(service, gen, A)
    if active is None:
        assert ref is None
    else:
        assert ref == AdapterRef(active.name, active.path)
        assert await asyncio.to_thread(Path(active.path).is_dir)
    assert (active is not None) == (phase == "activated")
    # Every folder a version points to exists; no half-made adapter is left behind.
    for version in await versions_store.list_versions(sessions):
        assert await asyncio.to_thread(Path(version.path).is_dir)
    latest = await runs_store.latest_run(sessions, A)
    assert latest is not None and latest.status != "running"
    if phase != "activated":
        adapters = tmp_path / "data" / "adapters"
        own = adapters / f"run-{latest.id:04d}"
        assert not await asyncio.to_thread(own.exists)


async def test_interrupted_run_is_failed_at_start_up_and_its_orphan_folder_removed(
    sessions: Any, tmp_path: Path
) -> None:
    info = await runs_store.create_run(
        sessions, requested_by=1, guild_id=A, channel_id=1, options={}
    )
    assert info is not None
    claimed = await runs_store.claim_next(sessions, "elsewhere:1:dead", lease_s=0.01)
    assert claimed is not None and claimed.id == info.id
    orphan = tmp_path / "data" / "adapters" / f"run-{info.id:04d}.work"
    orphan.mkdir(parents=True)
    await asyncio.sleep(0.05)  # the dead holder's lease expires
    _, manager = harness(sessions, tmp_path)
    assert await manager.recover() == [info.id]
    assert not await asyncio.to_thread(orphan.exists)
    run = await runs_store.get_run(sessions, info.id)
    assert run is not None and run.status == "failed"
    await manager.shutdown()


async def test_model_cli_lists_activates_rolls_back_and_refuses_bad_input(
    sessions: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], store_url: str
) -> None:
    for name, guild in (("default-v1", None), ("a-1", A), ("a-2", A)):
        (tmp_path / name).mkdir()  # a rollback returns only to a version whose folder exists
        await versions_store.add_version(
            sessions,
            name=name,
            path=str(tmp_path / name),
            base_model="b",
            metrics={},
            activate=False,
            guild_id=guild,
        )
    config = tmp_path / "config.toml"
    config.write_text(f'[database]\nurl = "{store_url}"\n')

    def cli(*args: str) -> int:
        return entry(["--config", str(config), *args])

    assert await asyncio.to_thread(cli, "model", "activate", "default-v1", "--default") == 0
    assert await asyncio.to_thread(cli, "model", "activate", "a-1", "--guild", str(A)) == 0
    assert await asyncio.to_thread(cli, "model", "activate", "a-2", "--guild", str(A)) == 0
    capsys.readouterr()
    assert await asyncio.to_thread(cli, "stats", "--json") == 0
    import json

    out = capsys.readouterr().out
    stats = json.loads(out[: out.rindex("}") + 1])
    assert stats["active_model"]["name"] == "default-v1"
    assert stats["guild_models"] == {
        str(A): {
            "name": "a-2",
            "path": str(tmp_path / "a-2"),
            "created_at": stats["guild_models"][str(A)]["created_at"],
        }
    }
    assert await asyncio.to_thread(cli, "model", "rollback", "--guild", str(A)) == 0
    assert "now uses a-1" in capsys.readouterr().out
    assert await asyncio.to_thread(cli, "model", "list", "--guild", str(A)) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in listed] == [["*", "a-1"], ["a-2", "guild"]]
    for bad in (
        ("model", "activate", "nope", "--default"),
        ("model", "activate", "a-1", "--default"),
        ("model", "activate", "a-1", "--guild", "12x"),
        ("model", "rollback", "--guild", str(B)),
    ):
        assert await asyncio.to_thread(cli, *bad) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("Error: ")


async def test_serve_starts_with_every_servers_active_model(
    sessions: Any, tmp_path: Path, store_url: str
) -> None:
    from bot.cli.versions import guild_adapters
    from bot.config import load_config

    for name, guild in (("a-1", A), ("b-1", B), ("b-old", B)):
        await versions_store.add_version(
            sessions,
            name=name,
            path=str(tmp_path / name),
            base_model="b",
            metrics={},
            activate=name != "b-old",
            guild_id=guild,
        )
    config_file = tmp_path / "config.toml"
    config_file.write_text(f'[database]\nurl = "{store_url}"\n')
    refs = await guild_adapters(load_config(config_file))
    assert sorted(refs, key=lambda r: r.name) == [
        AdapterRef("a-1", str(tmp_path / "a-1")),
        AdapterRef("b-1", str(tmp_path / "b-1")),
    ]


@pytest.mark.parametrize("guild", [None, A])
async def test_the_index_allows_one_active_version_per_scope_null_included(
    sessions: Any, guild: int | None
) -> None:
    from sqlalchemy.exc import IntegrityError

    from bot.store.models import ModelVersion

    async with sessions.begin() as session:
        session.add(
            ModelVersion(name="one", path="/a", base_model="b", active=True, guild_id=guild)
        )
    with pytest.raises(IntegrityError):
        async with sessions.begin() as session:
            session.add(
                ModelVersion(name="two", path="/b", base_model="b", active=True, guild_id=guild)
            )
    # Another scope, and inactive rows of the same scope, are fine.
    other = B if guild is None else None
    async with sessions.begin() as session:
        session.add(
            ModelVersion(name="three", path="/c", base_model="b", active=True, guild_id=other)
        )
        session.add(
            ModelVersion(name="four", path="/d", base_model="b", active=False, guild_id=guild)
        )


async def test_racing_claims_give_the_slot_to_exactly_one_holder(sessions: Any) -> None:
    for guild in (A, B, 333):
        assert await runs_store.create_run(
            sessions, requested_by=1, guild_id=guild, channel_id=1, options={}
        )
    claims = await asyncio.gather(
        *(runs_store.claim_next(sessions, f"host:{i}:x", lease_s=30) for i in range(6))
    )
    won = [c for c in claims if c is not None]
    assert len(won) == 1 and won[0].guild_id == A
    holder, _ = await runs_store.lease_holder(sessions)
    assert holder == f"host:{claims.index(won[0])}:x"
    assert len(await runs_store.runs_by_status(sessions, "running")) == 1


@pytest.mark.parametrize("elsewhere", ["cancel", "lease lost"])
async def test_what_happens_elsewhere_while_activating_stops_the_activation(
    sessions: Any, tmp_path: Path, elsewhere: str
) -> None:
    """A cancel from another process, or a lost lease (the holder stalled, another process's
    claim failed the run), that arrives while the worker loads the adapter: the run does not
    activate, and its adapter is deleted like that of any stopped run."""
    gen = ScriptedGenerator()
    service, manager = harness(sessions, tmp_path, gen)
    prepare = gen.prepare

    async def meanwhile_then_prepare(adapter: AdapterRef) -> None:
        run = await runs_store.active_run(sessions, A)
        assert run is not None
        if elsewhere == "cancel":
            assert await runs_store.cancel_run(sessions, run.id, "stopped elsewhere")
        else:
            await runs_store.expire_lease(sessions, manager.holder)
            assert await runs_store.claim_next(sessions, "other process", lease_s=30) is None
        await prepare(adapter)

    gen.prepare = meanwhile_then_prepare  # type: ignore[method-assign]
    await start(manager, A)
    outcome = await manager.wait()
    assert outcome is not None
    expected = "cancelled" if elsewhere == "cancel" else "failed"
    assert outcome.status == expected, outcome.reason
    assert await versions_store.serving_version(sessions, A) is None
    assert await versions_store.list_versions(sessions) == []
    run = await runs_store.get_run(sessions, outcome.run_id)
    assert run is not None and run.status == expected and run.model_version_id is None
    adapter = tmp_path / "data" / "adapters" / f"run-{outcome.run_id:04d}"
    assert not await asyncio.to_thread(adapter.exists)
    ref, _ = await generate_for(service, gen, A)
    assert ref is None
    await manager.shutdown()


@pytest.mark.parametrize("spelling", ["trailing slash", "checkpoint in .work", "via a link"])
async def test_recovery_never_deletes_a_folder_a_version_references(
    sessions: Any, tmp_path: Path, spelling: str
) -> None:
    """An interrupted run's outputs go, except what a model version points to, however the
    version spells the path (or when it points inside one of those folders)."""
    info = await runs_store.create_run(
        sessions, requested_by=1, guild_id=A, channel_id=1, options={}
    )
    assert info is not None
    claimed = await runs_store.claim_next(sessions, "elsewhere:1:dead", lease_s=0.01)
    assert claimed is not None
    adapters = tmp_path / "data" / "adapters"
    adapter = adapters / f"run-{info.id:04d}"
    work = adapters / f"run-{info.id:04d}.work"
    checkpoint = work / "checkpoint-50"
    for folder in (adapter, checkpoint):
        folder.mkdir(parents=True)
        (folder / "adapter_model.safetensors").write_bytes(b"weights")
    if spelling == "trailing slash":
        referenced, kept = f"{adapter}/", adapter
    elif spelling == "checkpoint in .work":
        referenced, kept = str(checkpoint), checkpoint
    else:
        link = tmp_path / "link-to-adapters"
        link.symlink_to(adapters, target_is_directory=True)
        referenced, kept = str(link / adapter.name), adapter
    await versions_store.add_version(
        sessions, name="kept", path=referenced, base_model="b", metrics={}, activate=True
    )
    await asyncio.sleep(0.05)  # the holder's lease expires
    _, manager = harness(sessions, tmp_path)
    assert await manager.recover() == [info.id]
    assert await asyncio.to_thread((kept / "adapter_model.safetensors").is_file)
    await manager.shutdown()
