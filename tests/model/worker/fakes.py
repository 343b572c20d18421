"""A deterministic fake sampler for worker tests (runs inside the spawned worker process).

Texts encode the request they answer, so a test can tell whether each caller got its own:
``"<prompt>|<temperature>|<top_p>|<max_tokens>|<stop>|<seed>|<index>|<tag>"``.

Prompts steer the fake: ``sleep:<s>`` sleeps ``s`` seconds before the batch is answered,
``crash`` kills the process with SIGKILL, ``hang`` sleeps for an hour, ``raise`` raises. The
adapter folder may hold ``fake.json`` with ``tag`` (appears in texts and the model name),
``load_error`` (loading raises it) or ``empty`` (every completion is empty text, for the default
adapter and for one loaded by name alike).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from model.errors import ModelLoadError
from model.protocol import GenerationRequest, GenerationResult
from model.worker.settings import SamplerSpec


class FakeSampler:
    def __init__(self, spec: SamplerSpec) -> None:
        options: dict[str, Any] = {}
        if spec.base_model == "broken":
            raise ModelLoadError("The base model 'broken' does not exist.")
        if spec.adapter is not None:
            card = Path(spec.adapter) / "fake.json"
            if not card.is_file():
                raise ModelLoadError(f"{spec.adapter} is not a LoRA adapter folder.")
            options = json.loads(card.read_text())
        if "load_error" in options:
            raise ValueError(options["load_error"])
        self.tag = str(options.get("tag", "base"))
        self.empty = bool(options.get("empty", False))
        self.name = f"fake+{self.tag}"
        self.extra_tags: dict[str, str] = {}  # adapters loaded besides the default: name → tag
        self.extra_empty: set[str] = set()  # those of them that answer only empty text
        self.loads = 0

    def load_adapter(self, name: str, path: str) -> None:
        card = Path(path) / "fake.json"
        if not card.is_file():
            raise ModelLoadError(f"{path} is not a LoRA adapter folder.")
        options = json.loads(card.read_text())
        if "load_error" in options:
            raise ValueError(options["load_error"])
        self.extra_tags[name] = str(options.get("tag", name))
        if options.get("empty", False):
            self.extra_empty.add(name)
        else:
            self.extra_empty.discard(name)
        self.loads += 1

    def unload_adapter(self, name: str) -> None:
        self.extra_tags.pop(name, None)
        self.extra_empty.discard(name)

    def tag_of(self, request: GenerationRequest) -> str:
        if request.adapter is None:
            return self.tag
        return self.extra_tags[request.adapter.name]  # KeyError: the worker did not load it

    def complete_batch(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        delay = 0.0
        for request in requests:
            if request.prompt == "crash":
                os.kill(os.getpid(), signal.SIGKILL)
            if request.prompt == "hang":
                time.sleep(3600)
            if request.prompt == "raise":
                raise RuntimeError("the fake sampler was told to fail")
            if request.prompt.startswith("sleep:"):
                delay = max(delay, float(request.prompt.split(":", 1)[1].split()[0]))
        if delay:
            time.sleep(delay)
        rows = sum(r.n for r in requests)
        results = []
        for request in requests:
            if request.adapter is None:
                empty = self.empty
            else:
                empty = request.adapter.name in self.extra_empty
            if empty:
                texts = tuple("" for _ in range(request.n))
            else:
                texts = tuple(
                    "|".join(
                        str(part)
                        for part in (
                            request.prompt,
                            request.temperature,
                            request.top_p,
                            request.max_tokens,
                            ",".join(request.stop),
                            request.seed,
                            i,
                            self.tag_of(request),
                        )
                    )
                    for i in range(request.n)
                )
            results.append(
                GenerationResult(
                    texts=texts,
                    model=self.name,
                    prompt_tokens=len(request.prompt),
                    completion_tokens=request.n,
                    finished=(True,) * request.n,
                    extra={
                        "batch_rows": rows,
                        "batch_requests": len(requests),
                        "pid": os.getpid(),
                        "adapter_loads": self.loads,
                    },
                )
            )
        return results


def fake_factory(spec: SamplerSpec) -> FakeSampler:
    return FakeSampler(spec)


def expected_prefix(request: GenerationRequest) -> str:
    """The part of every fake text that depends only on the request."""
    return "|".join(
        str(part)
        for part in (
            request.prompt,
            request.temperature,
            request.top_p,
            request.max_tokens,
            ",".join(request.stop),
            request.seed,
        )
    )


def write_adapter(path: Path, **options: Any) -> Path:
    """A fake adapter folder whose ``fake.json`` holds ``options``, with the
    ``adapter_config.json`` that marks a LoRA adapter folder (``model.artifacts.is_adapter``)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "fake.json").write_text(json.dumps(options))
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    return path
