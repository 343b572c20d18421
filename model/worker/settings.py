"""Plain settings of the worker: the ``[worker]`` and ``[serve]`` sections of the bot's config.

``bot.config`` loads :class:`WorkerSettings` and :class:`ServeSettings` from TOML and the
environment (and calls ``validate()``); :func:`model.worker.factory.make_client` derives the
:class:`SamplerSpec` from ``[model]``; tests build them directly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from model.base import ModelSpec
from model.fastpath import FastSettings
from model.protocol import GenerationRequest, GenerationResult

# A prompt the smoke generation of a hot reload completes; the exact text matters little: the
# check is that the adapter loads and samples finite, non-empty text.
DEFAULT_SMOKE_PROMPT = "genre:"


class SamplerLike(Protocol):
    """What the worker needs from a model: ``model.sampler.Sampler`` or a fake in tests."""

    name: str

    def complete_batch(self, requests: list[GenerationRequest]) -> list[GenerationResult]: ...


@dataclass(frozen=True)
class SamplerSpec(ModelSpec):
    """Which weights the worker loads: the base model of a :class:`~model.base.ModelSpec`,
    and the arguments ``Sampler.load`` takes beside it. Pickled to the worker process."""

    # LoRA adapter folder; None serves the base model alone.
    adapter: str | None = None
    # Where the converted base model is cached (None: the model library's default).
    data_dir: str | None = None
    # The fast-path levers (``[model] quantize`` / ``restrict_head``), as `generate` uses them.
    fast: FastSettings = field(default_factory=FastSettings)

    def with_adapter(self, adapter: str | None) -> SamplerSpec:
        return dataclasses.replace(self, adapter=adapter)


# Called in the worker process with the spec; must be picklable (a module-level function or a
# functools.partial of one) because the worker is started with the "spawn" method.
SamplerFactory = Callable[[SamplerSpec], SamplerLike]


def default_sampler_factory(spec: SamplerSpec) -> SamplerLike:
    """Load the real model (imports torch; only ever called inside the worker process)."""
    from model.sampler import Sampler

    sampler: SamplerLike = Sampler.load(spec, spec.adapter, data_dir=spec.data_dir, fast=spec.fast)
    return sampler


@dataclass(frozen=True)
class WorkerSettings:
    """How the bot reaches and supervises the worker (``[worker]`` in the config)."""

    # "local": the bot starts and supervises a worker process; "remote": HTTP to `url`.
    transport: str = "local"
    # OpenAI-compatible server of the remote transport (`microgenre serve`, vLLM, ...).
    url: str = "http://127.0.0.1:8700"
    # Several such servers (replaces `url` when not empty): requests go to the one with the
    # fewest outstanding, and a server that is down is skipped for `down_backoff_s`.
    urls: tuple[str, ...] = ()
    # Most completions in one HTTP request; larger requests are split (`[serve] max_n`).
    remote_max_n: int = 64
    # Seconds a server that refused a connection (or answered 5xx) is left out.
    down_backoff_s: float = 5.0
    # Bearer token for the remote server. Secret: no default, never logged.
    api_token: str | None = field(default=None, repr=False)
    # Model name sent to the remote server (vLLM: the name given to --lora-modules).
    remote_model: str = "genre"
    # How long the oldest queued request waits for company before its batch starts.
    batch_window_ms: float = 25.0
    # Most completions (sum of ``n``) generated together in one batch.
    max_batch_size: int = 256
    # Most tokens in one batch: (prompt + max_tokens) x n summed over its requests, a prompt
    # counted in UTF-8 bytes as `[serve] max_request_tokens` counts. Bounds the memory of long
    # prompts; a single request over it still runs, alone.
    max_batch_tokens: int = 32768
    # Most requests waiting in the queue; beyond it callers get WorkerBusyError.
    queue_size: int = 256
    # The worker process reports that it is alive this often...
    heartbeat_interval_s: float = 1.0
    # ...and is killed and restarted when no report came for this long.
    heartbeat_timeout_s: float = 10.0
    # A caller waits at most this long (queue + generation); a batch running this long is hung.
    request_timeout_s: float = 120.0
    # First delay before restarting a crashed worker; doubles on each crash in a row (≤ 60 s).
    restart_backoff_s: float = 1.0
    # How long loading the model may take (the first run converts the GGUF base model).
    start_timeout_s: float = 300.0
    # Most LoRA adapters kept loaded besides the default one (requests name theirs); beyond
    # it the least recently used is unloaded (and loaded again when a request needs it).
    max_adapters: int = 8
    # Prompt of the smoke generation an adapter must pass before a hot reload switches to it.
    smoke_prompt: ClassVar[str] = DEFAULT_SMOKE_PROMPT

    @property
    def endpoints(self) -> tuple[str, ...]:
        """The remote servers: ``urls``, else ``url`` alone.

        >>> WorkerSettings(urls=("http://a:8700", "http://b:8700")).endpoints
        ('http://a:8700', 'http://b:8700')
        >>> WorkerSettings().endpoints
        ('http://127.0.0.1:8700',)
        """
        return self.urls or (self.url,)

    def validate(self) -> None:
        if self.transport not in ("local", "remote"):
            raise ValueError(f"transport must be 'local' or 'remote', got {self.transport!r}")
        if self.transport == "remote":
            for url in self.endpoints:
                if not url.startswith(("http://", "https://")):
                    raise ValueError(f"url must start with http:// or https://, got {url!r}")
        if self.remote_max_n < 1:
            raise ValueError("remote_max_n must be >= 1")
        if self.down_backoff_s < 0:
            raise ValueError("down_backoff_s must be >= 0")
        if self.batch_window_ms < 0:
            raise ValueError("batch_window_ms must be >= 0")
        if self.max_adapters < 0:
            raise ValueError("max_adapters must be >= 0")
        for name in ("max_batch_size", "max_batch_tokens", "queue_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        for name in ("heartbeat_interval_s", "request_timeout_s", "start_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if self.heartbeat_timeout_s <= self.heartbeat_interval_s:
            raise ValueError("heartbeat_timeout_s must be greater than heartbeat_interval_s")
        if self.restart_backoff_s < 0:
            raise ValueError("restart_backoff_s must be >= 0")


@dataclass(frozen=True)
class ServeSettings:
    """Address, token and request limits of ``microgenre serve`` (``[serve]`` in the config)."""

    # Address to bind; 127.0.0.1 keeps it private to this machine.
    host: str = "127.0.0.1"
    port: int = 8700
    # Bearer token clients must send. Secret: no default, never logged; empty = no check.
    api_token: str | None = field(default=None, repr=False)
    # Bearer token of GET /metrics alone (a scraper's; the api_token opens it too). Secret: no
    # default, never logged. Unset: /metrics is open when the server binds a loopback address,
    # else it needs the api_token like every route but /health.
    metrics_token: str | None = field(default=None, repr=False)
    # Name clients put in "model" (vLLM: the name given to --lora-modules).
    model_name: str = "genre"
    # Most completions in one request (number of prompts × n).
    max_n: int = 64
    # Most new tokens per completion.
    max_tokens: int = 64
    # Longest prompt, in characters.
    max_prompt_chars: int = 2000
    # Most tokens one request may put into a batch: (prompt tokens + max_tokens) x n, summed
    # over its prompts. The server has no tokenizer, so a prompt counts its UTF-8 bytes (a
    # byte-level BPE token is at least one byte: never an undercount). Over it: HTTP 413.
    max_request_tokens: int = 32768
    # Whether POST /v1/load_lora_adapter may switch the adapter. Only with an api_token: a
    # server without one refuses every hot reload, whatever this says.
    allow_reload: bool = True
    # The folders POST /v1/load_lora_adapter may load adapters from (links resolved first);
    # empty: <data_dir>/adapters (where training writes), the shipped default adapter's folder
    # and [model] adapter. Relative paths are resolved against the config file's folder.
    adapter_dirs: tuple[str, ...] = ()
    # Most adapter names served besides the default (loaded with /v1/load_lora_adapter or at
    # start); loading one more drops the least recently used name, which a client loads again
    # on its 404 (the bot's remote client does). Names cost no memory here: [worker]
    # max_adapters bounds the adapters the worker keeps loaded.
    max_served_adapters: int = 64

    def validate(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError("port must be between 0 and 65535")
        for name in (
            "max_n",
            "max_tokens",
            "max_prompt_chars",
            "max_request_tokens",
            "max_served_adapters",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if not self.model_name.strip():
            raise ValueError("model_name must not be empty")
