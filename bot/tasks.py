"""Background tasks of the bot process: stopping one cleanly."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` (if any and still running) and wait until it has stopped.

    >>> async def demo():
    ...     task = asyncio.get_running_loop().create_task(asyncio.sleep(60))
    ...     await cancel_and_wait(task)
    ...     return task.cancelled()
    >>> asyncio.run(demo())
    True
    """
    if task is None or task.done():
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
