"""What the local and the remote worker client share: ``async with`` starts and closes them."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class ClientLifecycle:
    """``async with client:`` calls :meth:`start`, then :meth:`close` however the block ends."""

    async def start(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
