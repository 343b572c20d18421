"""The scheduler without a process: a fake worker port that records the messages it is sent."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.protocol import GenerationRequest, GenerationResult
from model.worker.errors import AdapterRejectedError, WorkerCrashedError, WorkerError
from model.worker.lifecycle import BackgroundTasks
from model.worker.messages import (
    BatchDone,
    BatchFailed,
    Generate,
    Reload,
    Reloaded,
    ReloadFailed,
    ToWorker,
)
from model.worker.scheduler import Scheduler
from model.worker.settings import SamplerSpec, WorkerSettings
from model.worker.stats import WorkerStats

SETTINGS = WorkerSettings(batch_window_ms=0, max_batch_size=4, queue_size=8)


@dataclass
class FakePort:
    """Stands in for the supervisor: accepts jobs and remembers them."""

    up: bool = True
    broken_pipe: bool = False
    sent: list[ToWorker] = field(default_factory=list)

    def accepting(self) -> bool:
        return self.up

    def send(self, message: ToWorker) -> bool:
        if self.broken_pipe:
            return False
        self.sent.append(message)
        return True


def answer(message: Generate, tag: str = "ok") -> BatchDone:
    results = tuple(
        GenerationResult(texts=tuple(f"{r.prompt}|{tag}" for _ in range(r.n)), model="fake")
        for r in message.requests
    )
    return BatchDone(message.batch_id, results, generate_s=0.1, rss=0)


def make() -> tuple[Scheduler, FakePort, WorkerStats]:
    stats = WorkerStats()
    return Scheduler(SETTINGS, stats, BackgroundTasks()), FakePort(), stats


def submit(
    scheduler: Scheduler, prompt: str, n: int = 1, on_position: Any = None
) -> asyncio.Task[GenerationResult]:
    return asyncio.ensure_future(scheduler.complete(GenerationRequest(prompt, n=n), on_position))


M = TypeVar("M", Generate, Reload)


def last(port: FakePort, kind: type[M]) -> M:
    message = port.sent[-1]
    assert isinstance(message, kind)
    return message


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_a_batch_is_sent_and_answered() -> None:
    scheduler, port, stats = make()
    tasks = [submit(scheduler, p) for p in ("a", "b")]
    await settle()
    assert scheduler.dispatch(port) is None
    [message] = port.sent
    assert isinstance(message, Generate) and [r.prompt for r in message.requests] == ["a", "b"]
    assert scheduler.in_flight == 2 and scheduler.queue_length == 0
    assert scheduler.batch_done(answer(message))
    assert [(await t).texts for t in tasks] == [("a|ok",), ("b|ok",)]
    assert stats.batches_served == 1 and stats.completions_served == 2
    assert not scheduler.batch_done(answer(message))  # an answer for nobody is ignored


async def test_only_one_job_at_a_time_and_reloads_go_first() -> None:
    scheduler, port, _ = make()
    first = submit(scheduler, "a", n=4)  # fills a batch on its own
    await settle()
    scheduler.dispatch(port)
    second = submit(scheduler, "b")
    reload = asyncio.ensure_future(scheduler.reload(SamplerSpec(adapter="v2")))
    await settle()
    scheduler.dispatch(port)
    assert len(port.sent) == 1  # the worker is busy
    scheduler.batch_done(answer(last(port, Generate)))
    scheduler.dispatch(port)
    op = last(port, Reload)
    assert op.spec.adapter == "v2"
    assert scheduler.reloaded(Reloaded(op.op_id, "fake+v2", "v2", 0.1)) == op.spec
    await reload
    scheduler.dispatch(port)
    scheduler.batch_done(answer(last(port, Generate), "v2"))
    assert (await first).texts[0] == "a|ok" and (await second).texts == ("b|v2",)


async def test_a_rejected_reload_raises() -> None:
    scheduler, port, _ = make()
    reload = asyncio.ensure_future(scheduler.reload(SamplerSpec(adapter="bad")))
    await settle()
    scheduler.dispatch(port)
    scheduler.reload_failed(ReloadFailed(last(port, Reload).op_id, "empty text"))
    with pytest.raises(AdapterRejectedError, match="empty text"):
        await reload


async def test_a_failed_send_keeps_the_batch_queued() -> None:
    scheduler, port, _ = make()
    task = submit(scheduler, "a")
    await settle()
    port.broken_pipe = True
    scheduler.dispatch(port)
    assert scheduler.queue_length == 1 and not scheduler.busy
    port.broken_pipe = False
    scheduler.dispatch(port)
    scheduler.batch_done(answer(last(port, Generate)))
    assert (await task).texts == ("a|ok",)


async def test_losing_the_worker_fails_only_the_running_batch() -> None:
    scheduler, port, _ = make()
    running = submit(scheduler, "a", n=4)
    await settle()
    scheduler.dispatch(port)
    queued = submit(scheduler, "b")
    await settle()
    scheduler.worker_lost("killed by SIGKILL")
    with pytest.raises(WorkerCrashedError, match="SIGKILL"):
        await running
    assert scheduler.queue_length == 1 and not queued.done()
    scheduler.fail_all(WorkerError("closing"))
    with pytest.raises(WorkerError, match="closing"):
        await queued


async def test_positions_count_down() -> None:
    scheduler, port, _ = make()
    seen: dict[str, list[int]] = {"a": [], "b": []}
    tasks = [submit(scheduler, name, n=4, on_position=seen[name].append) for name in ("a", "b")]
    await settle()
    for _ in range(2):
        scheduler.dispatch(port)
        scheduler.batch_done(answer(last(port, Generate)))
    await asyncio.gather(*tasks)
    assert seen == {"a": [1, 0], "b": [2, 1, 0]}


# ---------------------------------------------------------------------- random event orders

events = st.lists(
    st.sampled_from(["submit", "dispatch", "done", "failed", "lost", "down", "up", "cancel"]),
    max_size=40,
)


async def _run_events(script: list[str]) -> None:
    scheduler, port, _ = make()
    tasks: dict[str, asyncio.Task[GenerationResult]] = {}
    for step, event in enumerate(script):
        if event == "submit" and scheduler.queue_length < SETTINGS.queue_size:
            tasks[f"p{step}"] = submit(scheduler, f"p{step}", n=1 + step % 3)
        elif event == "dispatch":
            scheduler.dispatch(port)
        elif event in ("done", "failed") and port.sent:
            message = last(port, Generate)
            if event == "done":
                scheduler.batch_done(answer(message))
            else:
                scheduler.batch_failed(BatchFailed(message.batch_id, "boom"))
        elif event == "lost":
            scheduler.worker_lost("killed")
        elif event in ("down", "up"):
            port.up = event == "up"
        elif event == "cancel" and tasks:
            list(tasks.values())[step % len(tasks)].cancel()
        await settle()
        # A batch never holds more requests than fit in max_batch_size completions.
        assert scheduler.in_flight <= SETTINGS.max_batch_size
    scheduler.fail_all(WorkerError("closing"))
    outcomes = await asyncio.gather(*tasks.values(), return_exceptions=True)
    for prompt, outcome in zip(tasks, outcomes, strict=True):
        # Every caller hears exactly one thing: its own texts, an error, or its cancellation.
        if isinstance(outcome, GenerationResult):
            assert outcome.texts and all(t == f"{prompt}|ok" for t in outcome.texts)
        else:
            assert isinstance(outcome, WorkerError | asyncio.CancelledError)
    assert scheduler.queue_length == 0 and not scheduler.busy


@settings(max_examples=150, deadline=None)
@given(events)
def test_random_event_orders_answer_every_caller_once(script: list[str]) -> None:
    asyncio.run(_run_events(script))


async def test_batches_are_bounded_by_tokens_too() -> None:
    # (6 bytes + 16 new tokens) x n per request: 22 per row; room for 3 rows.
    settings_ = WorkerSettings(batch_window_ms=0, max_batch_size=64, max_batch_tokens=70)
    scheduler = Scheduler(settings_, WorkerStats(), BackgroundTasks())
    port = FakePort()
    tasks = [submit(scheduler, "prompt", n=n) for n in (2, 1, 1, 5)]
    await settle()
    sizes = []
    while scheduler.queue_length or scheduler.busy:
        scheduler.dispatch(port)
        message = last(port, Generate)
        sizes.append([r.n for r in message.requests])
        scheduler.batch_done(answer(message))
    assert sizes == [[2, 1], [1], [5]]  # the 5-row request is over the bound: it runs alone
    await asyncio.gather(*tasks)


def test_max_batch_tokens_is_validated() -> None:
    with pytest.raises(ValueError, match="max_batch_tokens"):
        WorkerSettings(max_batch_tokens=0).validate()
