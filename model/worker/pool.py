"""Several OpenAI-compatible servers behind the client interface of one (the remote transport).

:class:`Endpoints` decides which server takes the next request: the one with the fewest
outstanding requests among those that are up (ties in turn), and it leaves a server out for
``down_for_s`` seconds after a connection error or a 5xx. :class:`RemotePool` sends each request
through one :class:`~model.worker.remote.RemoteClient` per server, moves on to the next server
when one is down, and splits a request whose ``n`` is more than a server accepts
(:func:`split_request`) into parts it sends in parallel and joins again (:func:`join_results`).
With one URL it is a :class:`RemoteClient` that splits large requests.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp

from model.protocol import AdapterRef, GenerationRequest, GenerationResult, PositionCallback
from model.worker.errors import (
    WorkerBusyError,
    WorkerCrashedError,
    WorkerError,
    WorkerUnavailableError,
)
from model.worker.lifecycle import ClientLifecycle
from model.worker.remote import RemoteClient

log = logging.getLogger(__name__)

# Errors after which the next server is tried: the server is down (refused, 5xx, its worker
# crashed) or full (429). Anything else (a bad request, a refused token, a timeout) is raised.
DOWN_ERRORS = (WorkerUnavailableError, WorkerCrashedError)


def split_request(request: GenerationRequest, max_n: int) -> list[GenerationRequest]:
    """``request`` as parts of at most ``max_n`` completions each.

    A seeded request gives each part its own seed (``seed + index``): parts with one seed would
    sample the same completions.

    >>> parts = split_request(GenerationRequest("genre:", n=150, seed=7), 64)
    >>> [(p.n, p.seed) for p in parts]
    [(64, 7), (64, 8), (22, 9)]
    >>> split_request(GenerationRequest("genre:", n=3), 64)[0].n
    3
    """
    if request.n <= max_n:
        return [request]
    parts = []
    for index, start in enumerate(range(0, request.n, max_n)):
        seed = None if request.seed is None else request.seed + index
        parts.append(dataclasses.replace(request, n=min(max_n, request.n - start), seed=seed))
    return parts


def join_results(results: Sequence[GenerationResult]) -> GenerationResult:
    """One result from the results of the parts, in order.

    >>> a = GenerationResult(("x",), "m", 3, 1, finished=(True,))
    >>> b = GenerationResult(("y", "z"), "m", 3, 2, finished=(False, True))
    >>> joined = join_results([a, b])
    >>> joined.texts, joined.prompt_tokens, joined.completion_tokens, joined.finished
    (('x', 'y', 'z'), 6, 3, (True, False, True))
    """
    if len(results) == 1:
        return results[0]
    told = all(len(r.finished) == len(r.texts) for r in results)
    finished = tuple(f for r in results for f in r.finished) if told else ()
    return GenerationResult(
        texts=tuple(t for r in results for t in r.texts),
        model=results[0].model,
        prompt_tokens=sum(r.prompt_tokens for r in results),
        completion_tokens=sum(r.completion_tokens for r in results),
        queue_s=max(r.queue_s for r in results),
        generate_s=max(r.generate_s for r in results),
        finished=finished,
        # Scores only when every part scored every text (else they would not align).
        scores=tuple(s for r in results for s in r.scores)
        if all(len(r.scores) == len(r.texts) for r in results)
        else (),
    )


class Endpoints:
    """Outstanding requests and down-times of ``size`` servers; which to try, in order.

    >>> now = [0.0]
    >>> pool = Endpoints(3, down_for_s=5.0, clock=lambda: now[0])
    >>> pool.begin(0); pool.order()
    [1, 2, 0]
    >>> pool.mark_down(1); pool.order()
    [2, 0]
    >>> now[0] = 1.0; pool.mark_down(0); pool.mark_down(2); pool.order()  # all down
    [1]
    >>> now[0] = 7.0; pool.order()
    [1, 2, 0]
    """

    def __init__(
        self, size: int, *, down_for_s: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if size < 1:
            raise ValueError("a pool needs at least one server")
        self.down_for_s = down_for_s
        self._clock = clock
        self.outstanding = [0] * size
        self._down_until = [0.0] * size
        self._next = 0  # where ties start: in turn, so equal servers share the work

    def is_up(self, index: int) -> bool:
        return self._clock() >= self._down_until[index]

    def order(self) -> list[int]:
        """The servers that are up, fewest outstanding first (ties in turn).

        When every server is down, the one that comes back first is tried anyway: a single
        server is never left out, and a pool notices a server back without waiting.
        """
        size = len(self.outstanding)
        turn = [(self._next + k) % size for k in range(size)]
        self._next = (self._next + 1) % size
        up = sorted((i for i in turn if self.is_up(i)), key=lambda i: self.outstanding[i])
        return up or [min(range(size), key=lambda i: self._down_until[i])]

    def begin(self, index: int) -> None:
        self.outstanding[index] += 1

    def end(self, index: int) -> None:
        self.outstanding[index] -= 1

    def mark_down(self, index: int) -> None:
        self._down_until[index] = self._clock() + self.down_for_s

    def mark_up(self, index: int) -> None:
        self._down_until[index] = 0.0


class RemotePool(ClientLifecycle):
    """The client interface over one or more OpenAI-compatible servers; see the module doc."""

    transport = "remote"

    def __init__(
        self,
        urls: Sequence[str],
        api_token: str | None = None,
        *,
        model: str = "genre",
        request_timeout_s: float = 120.0,
        max_n: int = 64,
        down_for_s: float = 5.0,
    ) -> None:
        if not urls:
            raise ValueError("a remote pool needs at least one URL")
        self._token = api_token or None
        self.model = model
        self.request_timeout_s = request_timeout_s
        self.max_n = max_n
        self.endpoints = Endpoints(len(urls), down_for_s=down_for_s)
        self._session: aiohttp.ClientSession | None = None
        self.clients: list[RemoteClient] = [
            RemoteClient(u, api_token, model=model, request_timeout_s=request_timeout_s)
            for u in urls
        ]

    @property
    def url(self) -> str:
        """The first server (the only one, usually)."""
        return self.clients[0].url

    @property
    def urls(self) -> list[str]:
        return [c.url for c in self.clients]

    def __repr__(self) -> str:
        token = "set" if self._token else "none"
        return f"RemotePool(urls={self.urls!r}, model={self.model!r}, token={token})"

    @property
    def model_name(self) -> str | None:
        return next((c.model_name for c in self.clients if c.model_name), None)

    async def start(self, *, wait: bool = False) -> None:
        """Open each server's HTTP session; with ``wait``, check that one of them answers."""
        for client in self.clients:
            await client.start()
        if wait:
            await self.wait_ready()

    async def wait_ready(self) -> None:
        """Return when one server lists its models; else raise the first server's error."""
        errors: list[BaseException] = []
        for index, client in enumerate(self.clients):
            try:
                await client.wait_ready()
                return
            except (WorkerError, aiohttp.ClientError, TimeoutError) as exc:
                self.endpoints.mark_down(index)
                errors.append(exc)
        first = errors[0]
        if isinstance(first, WorkerError):
            raise first
        raise WorkerUnavailableError(
            f"Cannot reach the generation server at {self.url} ({type(first).__name__})."
        )

    async def close(self) -> None:
        for client in self.clients:
            await client.close()

    async def complete(
        self, request: GenerationRequest, *, on_position: PositionCallback | None = None
    ) -> GenerationResult:
        """Send ``request`` (split when its ``n`` is over ``max_n``) to the servers that are up."""
        parts = split_request(request, self.max_n)
        results = await asyncio.gather(
            *(
                self._complete_part(part, on_position if k == 0 else None)
                for k, part in enumerate(parts)
            )
        )
        return join_results(results)

    async def _complete_part(
        self, request: GenerationRequest, on_position: PositionCallback | None
    ) -> GenerationResult:
        last: WorkerError | None = None
        for index in self.endpoints.order():
            self.endpoints.begin(index)
            try:
                result = await self.clients[index].complete(request, on_position=on_position)
            except DOWN_ERRORS as exc:
                log.warning("generation server %s is down: %s", self.clients[index].url, exc)
                self.endpoints.mark_down(index)
                last = exc
                continue
            except WorkerBusyError as exc:
                last = exc
                continue
            finally:
                self.endpoints.end(index)
            self.endpoints.mark_up(index)
            return result
        if isinstance(last, WorkerBusyError):
            raise last
        # Shown to users: no addresses (they are in the log line above).
        raise WorkerUnavailableError(
            f"Every generation server is down ({len(self.clients)}); try again in a little while."
        )

    async def reload(self, adapter: str | os.PathLike[str] | None) -> None:
        """Load ``adapter`` (a path on the servers) on every server; the first error is raised."""
        outcomes = await asyncio.gather(
            *(c.reload(adapter) for c in self.clients), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def load_adapter(self, adapter: AdapterRef) -> None:
        """Load ``adapter`` on every server, whether or not it is marked down.

        When one server cannot, the servers that loaded it for this call drop it again and the
        first error is raised: a name is served everywhere or nowhere new.
        """
        outcomes = await asyncio.gather(
            *(c.load_adapter(adapter) for c in self.clients), return_exceptions=True
        )
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        if not errors:
            return
        loaded = [c for c, o in zip(self.clients, outcomes, strict=True) if o is True]
        await asyncio.gather(*(c.unload_adapter(adapter.name) for c in loaded))
        raise errors[0]

    def health(self) -> dict[str, Any]:
        """The first server's view, with every server under ``servers``."""
        servers = [
            {**c.health(), "up": self.endpoints.is_up(i)} for i, c in enumerate(self.clients)
        ]
        if len(servers) == 1:
            return servers[0]
        return {
            "transport": self.transport,
            "url": self.url,
            "model": self.model_name or self.model,
            "alive": any(s["alive"] and s["up"] for s in servers),
            "in_flight": sum(int(s["in_flight"]) for s in servers),
            "requests_served": sum(int(s["requests_served"]) for s in servers),
            "completions_served": sum(int(s["completions_served"]) for s in servers),
            "failures": sum(int(s["failures"]) for s in servers),
            "last_error": next((s["last_error"] for s in servers if s["last_error"]), None),
            "servers": servers,
        }

    async def fetch_health(self) -> dict[str, Any]:
        """Every server's ``/health``; with one server, its own."""
        found = await asyncio.gather(*(c.fetch_health() for c in self.clients))
        if len(found) == 1:
            return found[0]
        return {
            "transport": self.transport,
            "alive": any(bool(h.get("alive")) for h in found),
            "servers": list(found),
            "client": self.health(),
        }
