"""A torch-free sampler for the worker process in bot tests and benchmarks.

It answers every request with plausible, distinct genre names built from word lists (the
completion text after ``genre:``), optionally after ``delay_s`` per batch, so the real worker
client, batching and ``GenrePipeline`` run end to end without a model.

It loads adapters by name like the real sampler, but only checks that the folder holds an
``adapter_config.json`` (what PEFT writes, and ``tests/bot/scripts/fake_train.py``), so a
retraining run with the fake trainer can be activated and served (benchmarks/soak.py). The
names it generates do not depend on the adapter.
"""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path

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
        self.adapters: dict[str, str] = {}  # loaded besides the default: name -> folder

    def load_adapter(self, name: str, path: str) -> None:
        if not (Path(path) / "adapter_config.json").is_file():
            raise ValueError(f"{path} is not a LoRA adapter folder")
        self.adapters[name] = path

    def unload_adapter(self, name: str) -> None:
        self.adapters.pop(name, None)

    def complete_batch(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        if self.delay_s:
            time.sleep(self.delay_s)
        results = []
        for request in requests:
            if request.adapter is not None and request.adapter.name not in self.adapters:
                raise KeyError(f"adapter {request.adapter.name} is not loaded")
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


def env_delay_factory(spec: SamplerSpec) -> ScriptedSampler:
    """Like :func:`scripted_factory`, ``MICROGENRE_TEST_SAMPLER_DELAY_S`` seconds per batch."""
    return ScriptedSampler(delay_s=float(os.environ.get("MICROGENRE_TEST_SAMPLER_DELAY_S", "0")))
