"""An OpenAI-compatible HTTP front of the worker (``microgenre serve``).

The subset served::

    POST /v1/completions         model, prompt (string or list), n, max_tokens, temperature,
                                 top_p, stop, seed  → OpenAI "text_completion" object
    GET  /v1/models              the served model
    POST /v1/load_lora_adapter   {"lora_name", "lora_path"}: hot reload (vLLM's endpoint)
    GET  /health                 the worker's health (no token needed; 503 while it is down)

Errors use OpenAI's body, ``{"error": {"message", "type", "param", "code"}}``: 400 for a bad
request or one over the limits, 401 for a missing or wrong bearer token, 404 for an unknown
model, 429 (with ``Retry-After``) when the queue is full, 503 while the worker is down, 504 on
timeouts. The API token is compared in constant time and never logged.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from aiohttp import web
from aiohttp.typedefs import Middleware

from model.protocol import GenerationRequest, GenerationResult
from model.worker.errors import (
    AdapterRejectedError,
    InvalidRequestError,
    WorkerBusyError,
    WorkerCrashedError,
    WorkerError,
    WorkerTimeoutError,
    WorkerUnavailableError,
)
from model.worker.settings import ServeSettings

log = logging.getLogger(__name__)

MAX_STOP_STRINGS = 4
MAX_STOP_CHARS = 64


class ServedBackend(Protocol):
    """What the server needs from the worker client."""

    @property
    def model_name(self) -> str | None: ...

    async def complete(self, request: GenerationRequest) -> GenerationResult: ...

    async def reload(self, adapter: str | None) -> None: ...

    def health(self) -> dict[str, Any]: ...


class _BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def error_response(
    status: int,
    message: str,
    *,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return web.json_response(body, status=status, headers=headers)


def _number(body: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _BadRequest(f"'{name}' must be a number.", name)
    if not low <= value <= high:
        raise _BadRequest(f"'{name}' must be between {low:g} and {high:g}, got {value}.", name)
    return float(value)


def _integer(body: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise _BadRequest(f"'{name}' must be an integer.", name)
    if not low <= value <= high:
        raise _BadRequest(f"'{name}' must be between {low} and {high}, got {value}.", name)
    return value


def parse_completion_body(
    body: Any, limits: ServeSettings, served: Sequence[str]
) -> list[GenerationRequest]:
    """Validate an OpenAI completions body; one request per prompt.

    Raises ``_BadRequest`` (→ 400) with a message naming the parameter, or ``LookupError``
    (→ 404) for a model this server does not serve.
    """
    if not isinstance(body, dict):
        raise _BadRequest("The request body must be a JSON object.")
    model = body.get("model")
    if model is not None and model not in served:
        raise LookupError(f"The model '{model}' does not exist; this server serves {served[0]!r}.")
    for flag in ("stream", "echo"):
        if body.get(flag):
            raise _BadRequest(f"'{flag}' is not supported by this server.", flag)
    if body.get("logprobs") is not None:
        raise _BadRequest("'logprobs' is not supported by this server.", "logprobs")
    prompt = body.get("prompt")
    prompts: list[str]
    if isinstance(prompt, str):
        prompts = [prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        prompts = list(prompt)
    else:
        raise _BadRequest("'prompt' must be a string or a non-empty list of strings.", "prompt")
    for text in prompts:
        if len(text) > limits.max_prompt_chars:
            raise _BadRequest(
                f"'prompt' is {len(text)} characters long; the limit is {limits.max_prompt_chars}.",
                "prompt",
            )
    n = _integer(body, "n", 1, 1, limits.max_n)
    if n * len(prompts) > limits.max_n:
        raise _BadRequest(
            f"{len(prompts)} prompts × n={n} asks for {n * len(prompts)} completions; "
            f"the limit is {limits.max_n}.",
            "n",
        )
    max_tokens = _integer(body, "max_tokens", 16, 1, limits.max_tokens)
    temperature = _number(body, "temperature", 1.0, 0.0, 2.0)
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0)
    if top_p == 0.0:
        raise _BadRequest("'top_p' must be greater than 0.", "top_p")
    stop_value = body.get("stop")
    stop: tuple[str, ...]
    if stop_value is None:
        stop = ()
    elif isinstance(stop_value, str):
        stop = (stop_value,)
    elif isinstance(stop_value, list) and all(isinstance(s, str) for s in stop_value):
        stop = tuple(stop_value)
    else:
        raise _BadRequest("'stop' must be a string or a list of strings.", "stop")
    if len(stop) > MAX_STOP_STRINGS or any(not s or len(s) > MAX_STOP_CHARS for s in stop):
        raise _BadRequest(
            f"'stop' takes at most {MAX_STOP_STRINGS} non-empty strings of at most "
            f"{MAX_STOP_CHARS} characters.",
            "stop",
        )
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise _BadRequest("'seed' must be an integer.", "seed")
    return [
        GenerationRequest(
            prompt=text,
            n=n,
            temperature=temperature,
            top_p=top_p,
            max_tokens=max_tokens,
            stop=stop,
            seed=seed,
        )
        for text in prompts
    ]


def completion_body(
    results: Sequence[GenerationResult], model: str, created: int | None = None
) -> dict[str, Any]:
    """The OpenAI ``text_completion`` object for the results of one request's prompts."""
    choices: list[dict[str, Any]] = []
    for result in results:
        finished = result.extra.get("finished") if result.extra else None
        for j, text in enumerate(result.texts):
            reason: str | None = None
            if isinstance(finished, list) and j < len(finished):
                reason = "stop" if finished[j] else "length"
            choices.append(
                {"text": text, "index": len(choices), "logprobs": None, "finish_reason": reason}
            )
    prompt_tokens = sum(r.prompt_tokens for r in results)
    completion_tokens = sum(r.completion_tokens for r in results)
    return {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def worker_error_response(exc: WorkerError) -> web.Response:
    """Map a worker error to its HTTP status and OpenAI error body."""
    if isinstance(exc, WorkerBusyError):
        return error_response(
            429,
            str(exc),
            type_="server_busy",
            code="busy",
            headers={"Retry-After": str(exc.retry_after_s)},
        )
    if isinstance(exc, WorkerTimeoutError):
        return error_response(504, str(exc), type_="timeout", code="timeout")
    if isinstance(exc, InvalidRequestError | AdapterRejectedError):
        return error_response(400, str(exc))
    if isinstance(exc, WorkerCrashedError):
        return error_response(503, str(exc), type_="service_unavailable", code="worker_crashed")
    if isinstance(exc, WorkerUnavailableError):
        return error_response(503, str(exc), type_="service_unavailable", code="unavailable")
    return error_response(503, str(exc), type_="server_error", code="worker_error")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_app(
    backend: ServedBackend, limits: ServeSettings | None = None, *, api_token: str | None = None
) -> web.Application:
    """The aiohttp application; the caller starts and closes ``backend``."""
    routes = _Routes(backend, limits or ServeSettings())
    app = web.Application(middlewares=[_guard(api_token.encode() if api_token else None)])
    app.router.add_post("/v1/completions", routes.completions)
    app.router.add_get("/v1/models", routes.models)
    app.router.add_post("/v1/load_lora_adapter", routes.load_adapter)
    app.router.add_get("/health", routes.health)
    return app


def _guard(token: bytes | None) -> Middleware:
    """Middleware: check the bearer token (not for /health); errors become OpenAI bodies."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if token is not None and request.path != "/health":
            header = request.headers.get("Authorization", "")
            scheme, _, given = header.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token):
                return error_response(
                    401,
                    "Invalid or missing API key (send 'Authorization: Bearer <token>').",
                    code="invalid_api_key",
                    headers={"WWW-Authenticate": "Bearer"},
                )
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return error_response(exc.status, exc.reason, code=str(exc.status))
        except Exception:
            log.exception("unexpected error serving %s %s", request.method, request.path)
            return error_response(500, "Internal server error.", type_="server_error")

    return guard


class _Routes:
    """The handlers of :func:`create_app`."""

    def __init__(self, backend: ServedBackend, limits: ServeSettings) -> None:
        self.backend = backend
        self.limits = limits

    def served(self) -> list[str]:
        names = [self.limits.model_name]
        if self.backend.model_name and self.backend.model_name not in names:
            names.append(self.backend.model_name)
        return names

    async def completions(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return error_response(400, "The request body is not valid JSON.")
        try:
            requests = parse_completion_body(body, self.limits, self.served())
        except _BadRequest as exc:
            return error_response(400, str(exc), param=exc.param)
        except LookupError as exc:
            return error_response(404, str(exc.args[0]), param="model", code="model_not_found")
        tasks = [asyncio.ensure_future(self.backend.complete(r)) for r in requests]
        try:
            results = await asyncio.gather(*tasks)
        except WorkerError as exc:
            return worker_error_response(exc)
        finally:
            for task in tasks:
                task.cancel()
        # Like OpenAI, answer with the concrete model behind the alias (base + adapter version).
        name = results[0].model if results and results[0].model else self.limits.model_name
        return web.json_response(completion_body(results, name))

    async def models(self, request: web.Request) -> web.Response:
        data = [
            {
                "id": self.limits.model_name,
                "object": "model",
                "created": int(time.time()),
                "owned_by": "microgenre",
                "root": self.backend.model_name,
            }
        ]
        return web.json_response({"object": "list", "data": data})

    async def load_adapter(self, request: web.Request) -> web.Response:
        limits = self.limits
        if not limits.allow_reload:
            return error_response(403, "Adapter reloads are disabled on this server.")
        try:
            body = await request.json()
        except ValueError:
            return error_response(400, "The request body is not valid JSON.")
        if not isinstance(body, dict) or not isinstance(body.get("lora_path"), str):
            return error_response(400, "'lora_path' (a folder on the server) is required.")
        name = body.get("lora_name", limits.model_name)
        if name != limits.model_name:
            return error_response(
                400, f"This server serves one adapter, named {limits.model_name!r}.", param="name"
            )
        try:
            await self.backend.reload(body["lora_path"])
        except WorkerError as exc:
            return worker_error_response(exc)
        return web.Response(text=f"Success: LoRA adapter '{name}' added successfully.")

    async def health(self, request: web.Request) -> web.Response:
        data = self.backend.health()
        return web.json_response(data, status=200 if data.get("alive") else 503)
