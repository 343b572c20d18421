"""Genre messages that are posted but not yet recorded in the store.

`/genre new` sends a message, then stores its id with ``attach_message``. Discord can deliver
a reaction on the new message in between, and the voting cog would find no genre for it and
drop the vote. The generation cog marks each post with :meth:`PostsInFlight.posting`; the
voting cog looks a message up with :meth:`PostsInFlight.find`, which looks again each time a
post in that channel finishes, as long as one is in flight (bounded by ``timeout_s``). The
events wait in their own tasks, in order per (message, user), so nothing is replayed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

T = TypeVar("T")

FIND_TIMEOUT_S = 15.0


class PostsInFlight:
    """How many genre messages are being posted per channel, and a signal when one is done."""

    def __init__(self, timeout_s: float = FIND_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self._posting: Counter[int] = Counter()
        self._changed = asyncio.Event()

    def in_flight(self, channel_id: int) -> bool:
        return channel_id in self._posting

    @contextlib.contextmanager
    def posting(self, channel_id: int | None) -> Iterator[None]:
        """Wrap sending a genre message and recording its id (no-op without a channel)."""
        if channel_id is None:
            yield
            return
        self._posting[channel_id] += 1
        try:
            yield
        finally:
            self._posting[channel_id] -= 1
            if self._posting[channel_id] <= 0:
                del self._posting[channel_id]
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()

    async def find(self, channel_id: int, lookup: Callable[[], Awaitable[T | None]]) -> T | None:
        """``lookup()``, repeated after each finished post while one in ``channel_id`` is in
        flight; None when nothing was found by the time none is (or after ``timeout_s``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        while True:
            changed = self._changed
            found = await lookup()
            if found is not None:
                return found
            if changed.is_set():  # a post finished during the lookup: look again
                continue
            remaining = deadline - loop.time()
            if not self.in_flight(channel_id) or remaining <= 0:
                return None
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                return await lookup()
