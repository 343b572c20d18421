"""Giving the C heap's free pages back to the system.

The 60-minute soak showed the bot's RSS rising while the bytes ``malloc`` has handed out stayed
flat: the growth was free space inside glibc's heap (``mallinfo2().fordblks``), left between
long-lived blocks by the short-lived buffers of gateway events and HTTP responses. glibc only
returns the top of the heap by itself; ``malloc_trim(0)`` also hands back the free pages in the
middle. :class:`HeapTrimmer` calls it every ``[bot] heap_trim_s`` seconds (a few milliseconds
on the bot's heap). Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from collections.abc import Callable
from typing import Any

from bot.tasks import cancel_and_wait

log = logging.getLogger(__name__)


def _load_malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        func: Any = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # no libc, or one without malloc_trim (musl, macOS)
        return None
    func.argtypes = [ctypes.c_size_t]
    func.restype = ctypes.c_int
    return func


class _TrimHeap:
    """``trim_heap()``: True if memory was given back, False if none was or it is unavailable."""

    def __init__(self) -> None:
        self._func = _load_malloc_trim()

    @property
    def available(self) -> bool:
        return self._func is not None

    def __call__(self) -> bool:
        return bool(self._func is not None and self._func(0))


trim_heap = _TrimHeap()


class HeapTrimmer:
    """Calls ``trim`` every ``interval_s`` seconds on the event loop; 0 means never."""

    def __init__(self, interval_s: float, trim: Callable[[], bool] = trim_heap) -> None:
        self.interval_s = interval_s
        self._trim = trim
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self.interval_s > 0 and not self.running:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="heap-trim")

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                self._trim()
            except Exception:
                log.exception("trimming the heap failed")
