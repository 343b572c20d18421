"""The store is the arbiter of the retraining rules, on SQLite and on PostgreSQL: one open run
per server, activation only by the live holder of a run nobody cancelled, leases on the
database's clock."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.store import runs as runs_store
from bot.store.engine import SessionMaker
from bot.store.models import TrainingRun
from bot.store.runs import RetrainRefusedError
from tests.bot.test_migrations import postgres_url  # noqa: F401 (fixture)

pytestmark = pytest.mark.timeout(60)

A, B = 111, 222


@pytest.fixture
def sessions(both_stores: SessionMaker) -> SessionMaker:
    return both_stores


async def enqueue(sessions: SessionMaker, guild_id: int | None, **kw: Any) -> runs_store.RunInfo:
    return await runs_store.enqueue_run(
        sessions, requested_by=1, guild_id=guild_id, channel_id=1, options={}, **kw
    )


async def open_runs(sessions: SessionMaker, guild_id: int | None) -> int:
    scope = TrainingRun.guild_id.is_(None) if guild_id is None else TrainingRun.guild_id == guild_id
    async with sessions.begin() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(TrainingRun)
            .where(scope, TrainingRun.status.in_(("pending", "running")))
        )
    return int(count or 0)


# ------------------------------------------------------------------ one open run per server


@pytest.mark.parametrize("guild", [A, None])
async def test_five_concurrent_starts_queue_exactly_one_run(
    sessions: SessionMaker, guild: int | None
) -> None:
    results = await asyncio.gather(
        *(enqueue(sessions, guild) for _ in range(5)), return_exceptions=True
    )
    queued = [r for r in results if isinstance(r, runs_store.RunInfo)]
    refused = [r for r in results if isinstance(r, RetrainRefusedError)]
    assert len(queued) == 1, results
    assert len(refused) == 4, results
    assert all("already queued" in str(r) and f"#{queued[0].id}" in str(r) for r in refused)
    assert await open_runs(sessions, guild) == 1
    # Another server still queues its own run.
    await enqueue(sessions, B)
    assert await open_runs(sessions, B) == 1


async def test_the_database_refuses_a_second_open_run_of_a_server(
    sessions: SessionMaker,
) -> None:
    from sqlalchemy.exc import IntegrityError

    async with sessions.begin() as session:
        session.add(TrainingRun(guild_id=A, status="running"))
    with pytest.raises(IntegrityError):
        async with sessions.begin() as session:
            session.add(TrainingRun(guild_id=A, status="pending"))
    # Finished runs do not count.
    async with sessions.begin() as session:
        session.add(TrainingRun(guild_id=A, status="failed"))
        session.add(TrainingRun(guild_id=A, status="succeeded"))


async def test_a_refused_start_leaves_nothing_behind(sessions: SessionMaker) -> None:
    with pytest.raises(RetrainRefusedError, match="retraining needs 3"):
        await enqueue(sessions, A, min_votes=3)
    assert await open_runs(sessions, A) == 0
    async with sessions.begin() as session:
        assert await session.scalar(select(func.count()).select_from(TrainingRun)) == 0


# ------------------------------------------------------------------ leases on the database's clock


def clock_off_by(monkeypatch: pytest.MonkeyPatch, offset: timedelta) -> None:
    """This host's clock (the one the store's code reads) is ``offset`` off."""
    real = runs_store.utcnow
    monkeypatch.setattr(runs_store, "utcnow", lambda: real() + offset)


async def test_a_host_whose_clock_is_fast_cannot_take_a_live_lease(
    sessions: SessionMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    await enqueue(sessions, A)
    await enqueue(sessions, B)
    first = await runs_store.claim_next(sessions, "on-time", lease_s=30)
    assert first is not None and first.guild_id == A
    clock_off_by(monkeypatch, timedelta(minutes=2))
    assert await runs_store.claim_next(sessions, "fast", lease_s=30) is None
    assert await runs_store.fail_interrupted_runs(sessions, "restarted") == []
    holder, _ = await runs_store.lease_holder(sessions)
    assert holder == "on-time"
    run = await runs_store.get_run(sessions, first.id)
    assert run is not None and run.status == "running"


async def test_renewing_and_expiring_a_lease_follow_the_database_clock(
    sessions: SessionMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    await enqueue(sessions, A)
    await enqueue(sessions, B)
    fast = await runs_store.claim_next(sessions, "fast", lease_s=30)
    assert fast is not None
    clock_off_by(monkeypatch, timedelta(minutes=2))
    # Renewed for one second: it ends one second from now, not two minutes later.
    assert await runs_store.renew_lease(sessions, "fast", fast.id, lease_s=1.0) is None
    monkeypatch.undo()
    await asyncio.sleep(1.3)
    second = await runs_store.claim_next(sessions, "other", lease_s=30)
    assert second is not None and second.guild_id == B
    # A host whose clock is fast expires a dead holder's lease now, not in two minutes.
    clock_off_by(monkeypatch, timedelta(minutes=2))
    await runs_store.expire_lease(sessions, "other")
    monkeypatch.undo()
    await enqueue(sessions, 333)
    third = await runs_store.claim_next(sessions, "third", lease_s=30)
    assert third is not None and third.guild_id == 333


# ------------------------------------------------------------------ activation


async def activate(sessions: SessionMaker, run_id: int, holder: str, name: str = "v") -> Any:
    return await runs_store.finish_activated(
        sessions,
        run_id,
        holder=holder,
        name=name,
        path=f"/adapters/{name}",
        base_model="b",
        metrics={},
        guild_id=A,
        result={},
    )


async def versions(sessions: SessionMaker) -> list[str]:
    from bot.store import versions as versions_store

    return [v.name for v in await versions_store.list_versions(sessions)]


async def test_the_live_holder_activates(sessions: SessionMaker) -> None:
    await enqueue(sessions, A)
    run = await runs_store.claim_next(sessions, "me", lease_s=30)
    assert run is not None and run.holder == "me"
    version = await activate(sessions, run.id, "me")
    assert version.active and version.guild_id == A
    done = await runs_store.get_run(sessions, run.id)
    assert done is not None and done.status == "succeeded"
    assert done.model_version_id == version.id


async def test_a_stale_holder_cannot_activate(sessions: SessionMaker) -> None:
    await enqueue(sessions, A)
    run = await runs_store.claim_next(sessions, "stalled", lease_s=0.05)
    assert run is not None
    await asyncio.sleep(0.2)  # its lease expires; the next claim marks its run failed
    assert await runs_store.claim_next(sessions, "other", lease_s=30) is None
    with pytest.raises(runs_store.ActivationRefusedError) as refused:
        await activate(sessions, run.id, "stalled")
    assert refused.value.status == "failed"
    assert await versions(sessions) == []
    after = await runs_store.get_run(sessions, run.id)
    assert after is not None and after.status == "failed" and after.model_version_id is None


async def test_a_holder_that_lost_the_slot_cannot_activate(sessions: SessionMaker) -> None:
    await enqueue(sessions, A)
    run = await runs_store.claim_next(sessions, "first", lease_s=30)
    assert run is not None
    # Another process holds the slot now (the run itself still reads running).
    async with sessions.begin() as session:
        from bot.store.models import RetrainLease

        lease = await session.get(RetrainLease, runs_store.LEASE_ROW)
        assert lease is not None
        lease.holder = "second"
    with pytest.raises(runs_store.ActivationRefusedError, match="training slot was lost"):
        await activate(sessions, run.id, "first")
    assert await versions(sessions) == []


async def test_a_run_with_a_cancel_request_cannot_activate(sessions: SessionMaker) -> None:
    await enqueue(sessions, A)
    run = await runs_store.claim_next(sessions, "me", lease_s=30)
    assert run is not None
    await runs_store.cancel_run(sessions, run.id, "an admin said stop")
    with pytest.raises(runs_store.ActivationRefusedError, match="an admin said stop") as refused:
        await activate(sessions, run.id, "me")
    assert refused.value.status == "cancelled"
    assert await versions(sessions) == []
    after = await runs_store.get_run(sessions, run.id)
    assert after is not None and after.status == "running"  # its holder records the end


async def test_a_stale_holder_cannot_rewrite_how_its_run_ended(sessions: SessionMaker) -> None:
    """Once another process marked the run failed, the stalled holder's own end (its gate
    rejected the adapter, say) changes nothing."""
    await enqueue(sessions, A)
    run = await runs_store.claim_next(sessions, "stalled", lease_s=0.05)
    assert run is not None
    await asyncio.sleep(0.2)
    assert await runs_store.fail_interrupted_runs(sessions, "its process stopped") == [run.id]
    await runs_store.update_run(sessions, run.id, status="rejected", error="the gate said no")
    after = await runs_store.get_run(sessions, run.id)
    assert after is not None and after.status == "failed"
    assert after.error == "its process stopped"
    # Its numbers may still be written, and a status may be written again as it is.
    await runs_store.update_run(sessions, run.id, status="failed", progress=1.0, step=9)
    after = await runs_store.get_run(sessions, run.id)
    assert after is not None and after.status == "failed" and after.step == 9
