"""The contract between the generation client (bot, CLI) and the model worker.

Plain frozen dataclasses with ``to_dict``/``from_dict`` so they cross process and HTTP
boundaries unchanged. Importing this module never imports torch.

>>> req = GenerationRequest(prompt="genre:", n=4, temperature=0.9)
>>> GenerationRequest.from_dict(req.to_dict()) == req
True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

# Called with a request's place in line: 1 = next batch, 0 = being generated now. It may be a
# plain function or return an awaitable (the worker client schedules it as a task, e.g. a
# Discord message edit).
PositionCallback = Callable[[int], object]


@dataclass(frozen=True)
class GenerationRequest:
    """Sample ``n`` completions of ``prompt``."""

    prompt: str
    n: int = 1
    temperature: float = 1.0
    top_p: float = 0.95
    max_tokens: int = 16
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def sampling_key(self) -> tuple[float, float, int, tuple[str, ...]]:
        """Requests with equal keys may share one batch (prompts may differ)."""
        return (self.temperature, self.top_p, self.max_tokens, self.stop)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["stop"] = list(self.stop)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationRequest:
        values = dict(data)
        values["stop"] = tuple(values.get("stop") or ())
        return cls(**values)


@dataclass(frozen=True)
class GenerationResult:
    """The ``n`` raw completions of one request (text after the prompt, stop string cut)."""

    texts: tuple[str, ...]
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # Seconds spent waiting in the queue and generating (the whole batch it was part of).
    queue_s: float = 0.0
    generate_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["texts"] = list(self.texts)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationResult:
        values = dict(data)
        values["texts"] = tuple(values["texts"])
        return cls(**values)


class CompletionBackend(Protocol):
    """Anything that turns a request into raw completions: the local worker, a remote server,
    an in-process model, or a scripted fake in tests.

    Backends with a queue call ``on_position`` as the request moves up; others ignore it.
    """

    async def complete(
        self, request: GenerationRequest, *, on_position: PositionCallback | None = None
    ) -> GenerationResult: ...
