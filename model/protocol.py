"""The contract between the generation client (bot, CLI) and the model worker.

Plain frozen dataclasses with ``to_dict``/``from_dict`` so they cross process and HTTP
boundaries unchanged. Importing this module never imports torch.

>>> req = GenerationRequest(prompt="genre:", n=4, temperature=0.9)
>>> GenerationRequest.from_dict(req.to_dict()) == req
True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

# Called with a request's place in line: 1 = next batch, 0 = being generated now. It may be a
# plain function or return an awaitable (the worker client schedules it as a task, e.g. a
# Discord message edit).
PositionCallback = Callable[[int], object]


@dataclass(frozen=True)
class AdapterRef:
    """A LoRA adapter a request should be generated with.

    ``name`` is the served name, unique per model version (e.g. ``"guild-123-run-0007"``): the
    worker keys its resident adapters by it and a remote server exposes it as the ``model``.
    ``path`` is the adapter folder on the worker's machine, so any worker can load it on demand.

    >>> ref = AdapterRef(name="guild-1-run-0001", path="/models/guild-1-run-0001")
    >>> AdapterRef.from_dict(ref.to_dict()) == ref
    True
    """

    name: str
    path: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "path": self.path}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AdapterRef:
        return cls(name=str(data["name"]), path=str(data["path"]))


@dataclass(frozen=True)
class GenerateOptions:
    """How the genres of one call should be made: the options of ``/genre new`` and of
    ``microgenre generate``, passed as one value from the cog to the pipeline.

    ``weirdness`` 1..5 picks a plausibility band (None: unranked); ``exclude`` holds names the
    call must not come near (a server's issued genres); ``adapter`` None means the backend's
    default model; ``seed`` makes a call reproducible (and keeps it out of shared rounds).

    >>> GenerateOptions(like="dub", weirdness=2).keywords()["like"]
    'dub'
    """

    like: str | None = None
    temperature: float | None = None
    weirdness: int | None = None
    adapter: AdapterRef | None = None
    exclude: frozenset[str] = frozenset()
    seed: int | None = None

    def keywords(self) -> dict[str, Any]:
        """The options as the keyword arguments of ``GenrePipeline.generate``."""
        return {
            "like": self.like,
            "temperature": self.temperature,
            "weirdness": self.weirdness,
            "adapter": self.adapter,
            "exclude": self.exclude,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class GenerationRequest:
    """Sample ``n`` completions of ``prompt``.

    ``adapter`` None means the worker's default adapter (the one it was started with).

    >>> ref = AdapterRef(name="guild-1-run-0001", path="/m/a")
    >>> req = GenerationRequest(prompt="genre:", adapter=ref)
    >>> GenerationRequest.from_dict(req.to_dict()).adapter == ref
    True
    """

    prompt: str
    n: int = 1
    temperature: float = 1.0
    top_p: float = 0.95
    max_tokens: int = 16
    stop: tuple[str, ...] = ()
    seed: int | None = None
    adapter: AdapterRef | None = None
    # Never end a completion on a genre the adapter was trained on (its known_genres
    # fingerprint): while a row's text is one, its stop tokens are masked and it goes on. The
    # pipeline drops known genres anyway, so this only saves the samples it would waste; a
    # backend without the fingerprint (or a server that ignores the field) samples as usual.
    avoid_known: bool = False

    def sampling_key(self) -> tuple[float, float, int, tuple[str, ...]]:
        """Requests with equal keys may share one batch (prompts may differ)."""
        return (self.temperature, self.top_p, self.max_tokens, self.stop)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["stop"] = list(self.stop)
        data["adapter"] = None if self.adapter is None else self.adapter.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationRequest:
        values = dict(data)
        values["stop"] = tuple(values.get("stop") or ())
        adapter = values.get("adapter")
        values["adapter"] = None if adapter is None else AdapterRef.from_dict(adapter)
        return cls(**values)


@dataclass(frozen=True)
class GenerationResult:
    """The ``n`` raw completions of one request (text after the prompt, stop string cut).

    ``scores`` is empty, or one plausibility score per text: the mean log-probability of the
    completion's sampled tokens (its end token included) under the model's untempered
    distribution (see :mod:`model.sampler`). Backends that do not score leave it empty.

    >>> r = GenerationResult(("dub", "x"), "m", finished=(True, False), scores=(-1.5, -4.0))
    >>> GenerationResult.from_dict(r.to_dict()) == r, GenerationResult(("dub",), "m").scores
    (True, ())
    """

    texts: tuple[str, ...]
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # Seconds spent waiting in the queue and generating (the whole batch it was part of).
    queue_s: float = 0.0
    generate_s: float = 0.0
    # Per text: whether it ended at the end marker (True) or was cut at max_tokens (False);
    # empty when the backend does not tell.
    finished: tuple[bool, ...] = ()
    scores: tuple[float, ...] = ()
    # Diagnostics a backend may add (batch sizes, adapter loads); nothing reads it to decide.
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["texts"] = list(self.texts)
        data["finished"] = list(self.finished)
        data["scores"] = list(self.scores)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationResult:
        values = dict(data)
        values["texts"] = tuple(values["texts"])
        values["finished"] = tuple(bool(f) for f in values.get("finished") or ())
        values["scores"] = tuple(float(s) for s in values.get("scores") or ())
        return cls(**values)


# Seeds fit a signed 64-bit integer, as in ``torch.manual_seed`` and vLLM.
MAX_SEED = 2**63 - 1

# Control characters a prompt may hold: tab, line feed and carriage return.
_ALLOWED_CONTROLS = frozenset("\t\n\r")


@dataclass(frozen=True)
class Problem:
    """Why a request cannot be served: the offending field and a message that names it."""

    param: str
    message: str


def text_problem(text: str) -> str | None:
    """What makes ``text`` unfit for a tokenizer (a control character, a lone surrogate), or None.

    >>> text_problem("like: dub\\ngenre:") is None
    True
    >>> text_problem("genre:\\x00")
    'control character U+0000 at position 6'
    """
    for position, char in enumerate(text):
        code = ord(char)
        if 0xD800 <= code <= 0xDFFF:
            return f"lone surrogate U+{code:04X} at position {position}"
        if (code < 0x20 or 0x7F <= code <= 0x9F) and char not in _ALLOWED_CONTROLS:
            return f"control character U+{code:04X} at position {position}"
    return None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_request(request: GenerationRequest) -> Problem | None:
    """The first reason no worker should generate ``request``, or None when it is servable.

    Servers check this at their edge so a bad request is refused alone instead of failing the
    batch it would have joined.

    >>> check_request(GenerationRequest(prompt="genre:", n=2)) is None
    True
    >>> check_request(GenerationRequest(prompt=""))
    Problem(param='prompt', message="'prompt' must not be empty.")
    """
    if not isinstance(request.prompt, str) or not request.prompt:
        return Problem("prompt", "'prompt' must not be empty.")
    if (bad := text_problem(request.prompt)) is not None:
        return Problem("prompt", f"'prompt' contains a {bad}.")
    if not _is_int(request.n) or request.n < 1:
        return Problem("n", "'n' must be an integer of at least 1.")
    if not _is_int(request.max_tokens) or request.max_tokens < 1:
        return Problem("max_tokens", "'max_tokens' must be an integer of at least 1.")
    if not _is_number(request.temperature) or request.temperature < 0:
        return Problem("temperature", "'temperature' must be a number of at least 0.")
    if not _is_number(request.top_p) or not 0 < request.top_p <= 1:
        return Problem("top_p", "'top_p' must be a number greater than 0 and at most 1.")
    for stop in request.stop:
        if not isinstance(stop, str) or not stop:
            return Problem("stop", "'stop' strings must not be empty.")
        if (bad := text_problem(stop)) is not None:
            return Problem("stop", f"'stop' contains a {bad}.")
    seed = request.seed
    if seed is not None and (not _is_int(seed) or not 0 <= seed <= MAX_SEED):
        return Problem("seed", f"'seed' must be an integer between 0 and {MAX_SEED}.")
    if not isinstance(request.avoid_known, bool):
        return Problem("avoid_known", "'avoid_known' must be true or false.")
    return None


class CompletionBackend(Protocol):
    """Anything that turns a request into raw completions: the local worker, a remote server,
    an in-process model, or a scripted fake in tests.

    Backends with a queue call ``on_position`` as the request moves up; others ignore it.
    """

    async def complete(
        self, request: GenerationRequest, *, on_position: PositionCallback | None = None
    ) -> GenerationResult: ...
