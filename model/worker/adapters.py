"""The LoRA adapters a worker process keeps loaded next to its default one.

Each request names its adapter (:class:`~model.protocol.AdapterRef`, a served name and a
folder). Before a batch runs, :meth:`ResidentAdapters.prepare` loads the adapters it needs that
are not resident yet (between batches: adapter files are a few MB, loading takes well under a
second), and afterwards :meth:`ResidentAdapters.trim` evicts the least recently used beyond
``limit``. The default adapter is never evicted and does not count. A request whose adapter
cannot be loaded is set aside with the reason, so only that request fails.

Works with any sampler that has ``load_adapter(name, path)`` and ``unload_adapter(name)``
(:class:`model.sampler.Sampler`, the test fakes).

>>> class Fake:
...     def load_adapter(self, name, path): pass
...     def unload_adapter(self, name): pass
>>> resident = ResidentAdapters(limit=1)
>>> a, b = AdapterRef("a", "/m/a"), AdapterRef("b", "/m/b")
>>> _ = resident.prepare(Fake(), [GenerationRequest("x", adapter=a)], default_path=None)
>>> _ = resident.prepare(Fake(), [GenerationRequest("x", adapter=b)], default_path=None)
>>> resident.trim(Fake()), [ref.name for ref in resident.refs()]
(['a'], ['b'])
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from model.protocol import AdapterRef, GenerationRequest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    """A batch ready to run: the requests each adapter is resident for, and those set aside."""

    # (index in the batch, request) with the default adapter's requests rewritten to None.
    runnable: list[tuple[int, GenerationRequest]]
    # Index in the batch → why its adapter could not be loaded.
    failed: dict[int, str]


def _same_path(a: str, b: str | None) -> bool:
    return b is not None and os.path.realpath(a) == os.path.realpath(b)


class ResidentAdapters:
    """Adapters loaded in this process beyond the default, least recently used first."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lru: OrderedDict[str, AdapterRef] = OrderedDict()

    def refs(self) -> list[AdapterRef]:
        """The resident adapters, least recently used first."""
        return list(self._lru.values())

    def clear(self) -> None:
        """Forget every adapter (the sampler they were loaded into was replaced)."""
        self._lru.clear()

    def prepare(
        self, sampler: Any, requests: Sequence[GenerationRequest], *, default_path: str | None
    ) -> Prepared:
        """Make every adapter ``requests`` name resident; set aside those that fail to load."""
        errors: dict[str, str] = {}
        runnable: list[tuple[int, GenerationRequest]] = []
        failed: dict[int, str] = {}
        for index, request in enumerate(requests):
            ref = request.adapter
            if ref is not None and _same_path(ref.path, default_path):
                request, ref = dataclasses.replace(request, adapter=None), None
            if ref is not None:
                if ref.name not in errors:
                    error = self._ensure(sampler, ref)
                    if error is not None:
                        errors[ref.name] = error
                if ref.name in errors:
                    failed[index] = errors[ref.name]
                    continue
            runnable.append((index, request))
        return Prepared(runnable, failed)

    def _ensure(self, sampler: Any, ref: AdapterRef) -> str | None:
        """Load ``ref`` unless resident (then mark it used); the error text when it fails."""
        known = self._lru.get(ref.name)
        if known == ref:
            self._lru.move_to_end(ref.name)
            return None
        if known is not None:  # the same name now points elsewhere: load the new folder
            self._unload(sampler, ref.name)
        if not callable(getattr(sampler, "load_adapter", None)):
            return "this worker serves only its default adapter"
        try:
            sampler.load_adapter(ref.name, ref.path)
        except Exception as exc:
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            log.info("adapter %s (%s) failed to load: %s", ref.name, ref.path, text)
            return text
        self._lru[ref.name] = ref
        log.info("loaded adapter %s from %s", ref.name, ref.path)
        return None

    def trim(self, sampler: Any) -> list[str]:
        """Evict the least recently used adapters beyond ``limit``; their names."""
        evicted = []
        while len(self._lru) > self.limit:
            name = next(iter(self._lru))
            self._unload(sampler, name)
            evicted.append(name)
        return evicted

    def _unload(self, sampler: Any, name: str) -> None:
        self._lru.pop(name, None)
        try:
            sampler.unload_adapter(name)
        except Exception:
            log.exception("unloading adapter %s failed", name)
