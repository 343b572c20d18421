"""The worker process: owns the sampler, generates batches, beats its heart, dies with its parent.

Started by :class:`model.worker.client.WorkerClient` with the multiprocessing "spawn" method, so
torch is imported only here, never in the bot process. It talks over one duplex pipe in the
messages of :mod:`model.worker.messages`.

The child exits when the pipe closes (parent gone), when the parent process changes
(``getppid``), or at once on Linux through ``PR_SET_PDEATHSIG``: no orphan keeps a model in RAM.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection

from model.errors import ModelError
from model.protocol import GenerationRequest, GenerationResult
from model.worker.adapters import ResidentAdapters
from model.worker.batching import run_grouped
from model.worker.messages import (
    BatchDone,
    BatchFailed,
    FromWorker,
    Generate,
    Heartbeat,
    Loaded,
    LoadFailed,
    Phase,
    Reload,
    Reloaded,
    ReloadFailed,
    RequestFailed,
    Stop,
)
from model.worker.settings import SamplerFactory, SamplerLike, SamplerSpec

log = logging.getLogger(__name__)


def rss_bytes() -> int:
    """Resident memory of this process in bytes (0 where it cannot be read)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        try:
            import resource

            return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
        except (ImportError, OSError):
            return 0


def describe(exc: BaseException) -> str:
    """A one-line description of an exception for the parent's error message."""
    if isinstance(exc, ModelError):
        return str(exc)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this process when its parent dies (no-op elsewhere)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            pr_set_pdeathsig = 1
            libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(0)


def smoke_test(sampler: SamplerLike, prompt: str) -> None:
    """A short generation a freshly loaded adapter must pass before it serves anyone.

    Raises ``ValueError`` when the sampler fails, returns malformed results or only empty text.
    """
    request = GenerationRequest(prompt=prompt, n=4, max_tokens=8, seed=0)
    results = run_grouped(sampler.complete_batch, [request])
    texts = results[0].texts
    if not all(isinstance(t, str) for t in texts):
        raise ValueError("the smoke generation returned something other than text")
    if not any(t.strip() for t in texts):
        raise ValueError("the smoke generation produced only empty text")


class _Child:
    def __init__(
        self, conn: Connection, parent_pid: int, heartbeat_interval_s: float, max_adapters: int
    ) -> None:
        self.conn = conn
        self.parent_pid = parent_pid
        self.interval = heartbeat_interval_s
        self.send_lock = threading.Lock()
        self.phase: Phase = "loading"
        self.stop = threading.Event()
        self.resident = ResidentAdapters(max_adapters)

    def send(self, message: FromWorker) -> None:
        with self.send_lock:
            self.conn.send(message)

    def heartbeat(self) -> None:
        while not self.stop.wait(self.interval):
            if os.getppid() != self.parent_pid:
                os._exit(0)
            try:
                self.send(Heartbeat(rss=rss_bytes(), phase=self.phase))
            except (OSError, ValueError):  # pipe closed: the parent is gone
                os._exit(0)


def child_main(
    conn: Connection,
    spec: SamplerSpec,
    factory: SamplerFactory,
    parent_pid: int,
    heartbeat_interval_s: float,
    smoke_prompt: str,
    log_level: int = logging.WARNING,
    max_adapters: int = 8,
) -> None:
    """Entry point of the worker process."""
    # Ctrl-C in a terminal reaches the whole process group; the parent decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent_pid)
    logging.basicConfig(
        level=log_level, format="%(asctime)s %(levelname)s worker[%(process)d] %(message)s"
    )
    child = _Child(conn, parent_pid, heartbeat_interval_s, max_adapters)
    threading.Thread(target=child.heartbeat, name="heartbeat", daemon=True).start()
    try:
        _serve(child, spec, factory, smoke_prompt)
    except (EOFError, OSError, BrokenPipeError):
        pass  # the parent closed the pipe: nothing left to serve
    finally:
        child.stop.set()


def _serve(child: _Child, spec: SamplerSpec, factory: SamplerFactory, smoke_prompt: str) -> None:
    sampler = _load(child, spec, factory)
    if sampler is None:
        return
    while True:
        message = child.conn.recv()
        if isinstance(message, Stop):
            return
        if isinstance(message, Generate):
            child.phase = "generating"
            child.send(_generate(child, sampler, spec.adapter, message))
        elif isinstance(message, Reload):
            child.phase = "reloading"
            candidate = _reload(child, sampler, message, factory, smoke_prompt)
            if candidate is not sampler:  # the extra adapters lived in the old sampler
                sampler, spec = candidate, message.spec
                child.resident.clear()
            gc.collect()  # free the sampler that lost (the old one or the rejected one)
        else:
            log.warning("ignoring unknown message %r", message)
        child.phase = "ready"


def _load(child: _Child, spec: SamplerSpec, factory: SamplerFactory) -> SamplerLike | None:
    """The first sampler, announced with :class:`Loaded` (None after :class:`LoadFailed`)."""
    started = time.monotonic()
    try:
        sampler = factory(spec)
    except Exception as exc:
        # A ModelError is a complete, expected message; anything else is worth a traceback.
        log.log(
            logging.DEBUG if isinstance(exc, ModelError) else logging.ERROR,
            "loading the model failed",
            exc_info=True,
        )
        child.send(LoadFailed(f"could not load the model: {describe(exc)}"))
        return None
    child.phase = "ready"
    load_s = time.monotonic() - started
    child.send(Loaded(sampler.name, spec.adapter, os.getpid(), load_s, rss_bytes()))
    return sampler


def _generate(
    child: _Child, sampler: SamplerLike, default_path: str | None, message: Generate
) -> BatchDone | BatchFailed:
    """Load the adapters the batch needs, generate, then evict beyond ``max_adapters``."""
    t0 = time.monotonic()
    prepared = child.resident.prepare(sampler, message.requests, default_path=default_path)
    answers: list[GenerationResult | RequestFailed] = [
        RequestFailed(prepared.failed.get(i, "")) for i in range(len(message.requests))
    ]
    try:
        if prepared.runnable:
            results = run_grouped(sampler.complete_batch, [r for _, r in prepared.runnable])
            for (index, _), result in zip(prepared.runnable, results, strict=True):
                answers[index] = result
    except Exception as exc:
        log.exception("generation failed")
        return BatchFailed(message.batch_id, describe(exc))
    finally:
        child.resident.trim(sampler)
    elapsed = time.monotonic() - t0
    adapters = tuple(child.resident.refs())
    return BatchDone(message.batch_id, tuple(answers), elapsed, rss_bytes(), adapters)


def _reload(
    child: _Child, sampler: SamplerLike, message: Reload, factory: SamplerFactory, smoke_prompt: str
) -> SamplerLike:
    """The sampler that serves next: the new one if it loads and passes the smoke test."""
    t0 = time.monotonic()
    try:
        candidate = factory(message.spec)
        smoke_test(candidate, smoke_prompt)
    except Exception as exc:
        log.info("adapter %s rejected: %s", message.spec.adapter, describe(exc))
        child.send(ReloadFailed(message.op_id, describe(exc)))
        return sampler
    elapsed = time.monotonic() - t0
    child.send(Reloaded(message.op_id, candidate.name, message.spec.adapter, elapsed))
    return candidate
