"""A torch-free sampler for the worker process in bot tests and benchmarks.

It answers every request with plausible, distinct genre names built from word lists (the
completion text after ``genre:``), optionally after ``delay_s`` per batch, so the real worker
client, batching and ``GenrePipeline`` run end to end without a model.
"""

from __future__ import annotations

import itertools
import time

from model.protocol import GenerationRequest, GenerationResult
from model.worker.settings import SamplerSpec

FIRST = ["velvet", "harbour", "glacier", "copper", "neon", "moss", "tidal", "amber", "static"]
SECOND = ["polka", "drone", "twee", "sludge", "dub", "gaze", "trap", "waltz", "grime", "chant"]
THIRD = ["revival", "core", "wave", "soul", "fusion", "punk", "jazz", "folk"]


class ScriptedSampler:
    name = "scripted-sampler"

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.names = (
            f"{a} {b} {c}" for a, b, c in itertools.cycle(itertools.product(FIRST, SECOND, THIRD))
        )

    def complete_batch(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        if self.delay_s:
            time.sleep(self.delay_s)
        results = []
        for request in requests:
            texts = tuple(f" {next(self.names)}" for _ in range(request.n))
            results.append(
                GenerationResult(
                    texts=texts,
                    model=self.name,
                    finished=tuple([True] * request.n),
                )
            )
        return results


def scripted_factory(spec: SamplerSpec) -> ScriptedSampler:
    """Sampler factory for ``WorkerClient(..., sampler_factory=scripted_factory)``."""
    return ScriptedSampler()


def slow_factory(spec: SamplerSpec) -> ScriptedSampler:
    """Like :func:`scripted_factory`, 0.2 s per batch (a stand-in for a real model)."""
    return ScriptedSampler(delay_s=0.2)
