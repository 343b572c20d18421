"""An OpenAI-compatible HTTP front of the worker (``microgenre serve``).

The subset served::

    POST /v1/completions         model, prompt (string or list), n, max_tokens, temperature,
                                 top_p, stop, seed  → OpenAI "text_completion" object;
                                 and ``avoid_known`` (this project's extension: never end a
                                 completion on a genre the adapter was trained on)
    GET  /v1/models              the served models: the default, then every loaded adapter
    POST /v1/load_lora_adapter   {"lora_name", "lora_path"} (vLLM's endpoint): the configured
                                 name hot-reloads the default; any other name registers (or
                                 swaps) an adapter that requests name in "model"; only on a
                                 server with an API token, and only an adapter folder inside
                                 the server's adapter folders (one refusal text for every
                                 reason, so the answer never tells whether a path exists);
                                 beyond ``max_served_adapters`` names the least recently used
                                 one is dropped (a client loads it again on its 404)
    POST /v1/unload_lora_adapter {"lora_name"}: stop serving that adapter
    GET  /health                 liveness for anyone ({"status", "ready"}; 503 while the worker
                                 is down); the worker's details (pid, resident ``adapters``, last
                                 error) and the ``served`` adapters only with the token
    GET  /metrics                Prometheus metrics (:mod:`model.worker.metrics`): queue, batches,
                                 restarts; with the scrape token (``metrics_token``) or the API
                                 token, or open where the caller says so (a loopback bind)

Errors use OpenAI's body, ``{"error": {"message", "type", "param", "code"}}``: 400 for a bad
request or one over the limits, 401 for a missing, wrong or undecodable bearer token, 403 for a
hot reload this server does not allow, 404 for an unknown model, 413 for a body over 1 MiB or a
request over ``max_request_tokens``, 415 for a POST body that is not ``application/json``, 429 (with
``Retry-After``) when the queue is full, 503 while the worker is down, 504 on timeouts. Every
request is checked here, at the edge (:func:`model.protocol.check_request`), so a bad body is
refused alone and never reaches a batch. The API token is compared in constant time and never
logged.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web
from aiohttp.typedefs import Middleware

from model.artifacts import is_adapter
from model.protocol import (
    MAX_SEED,
    AdapterRef,
    GenerationRequest,
    GenerationResult,
    check_request,
    text_problem,
)
from model.worker.errors import (
    AdapterRejectedError,
    InvalidRequestError,
    WorkerBusyError,
    WorkerCrashedError,
    WorkerError,
    WorkerTimeoutError,
    WorkerUnavailableError,
)
from model.worker.metrics import CONTENT_TYPE, CollectorRegistry, exposition, watch_client
from model.worker.settings import DEFAULT_SMOKE_PROMPT, ServeSettings

log = logging.getLogger(__name__)

MAX_STOP_STRINGS = 4
MAX_STOP_CHARS = 64
MAX_LORA_NAME_CHARS = 200
# The one answer to every load that is refused for its folder: outside the adapter folders,
# missing, not a folder, not an adapter, or one the worker cannot load or generate with.
ADAPTER_REFUSED = (
    "This server cannot load that 'lora_path': it must be a LoRA adapter folder inside the "
    "server's adapter folders ([serve] adapter_dirs) that loads and generates."
)


class ServedBackend(Protocol):
    """What the server needs from the worker client."""

    @property
    def model_name(self) -> str | None: ...

    async def complete(self, request: GenerationRequest) -> GenerationResult: ...

    async def reload(self, adapter: str | None) -> None: ...

    def health(self) -> dict[str, Any]: ...


class _BadRequest(Exception):
    """A request refused at the edge; the middleware answers it in OpenAI's error shape."""

    def __init__(
        self, message: str, param: str | None = None, *, status: int = 400, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.param = param
        self.status = status
        self.code = code


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


def _served_model(
    body: dict[str, Any], served: Sequence[str], adapters: Mapping[str, AdapterRef]
) -> AdapterRef | None:
    """The adapter the body's ``model`` names (None: the default); 404 for an unknown one."""
    model = body.get("model")
    if model is None:
        return None
    if not isinstance(model, str):
        raise _BadRequest("'model' must be a string.", "model")
    if model in served:
        return None
    if model in adapters:
        return adapters[model]
    raise _BadRequest(
        f"The model {model!r} does not exist; this server serves {served[0]!r} and the "
        "adapters loaded with /v1/load_lora_adapter.",
        "model",
        status=404,
        code="model_not_found",
    )


def _prompts(body: dict[str, Any], limits: ServeSettings) -> list[str]:
    prompt = body.get("prompt")
    prompts: list[str]
    if isinstance(prompt, str):
        prompts = [prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        prompts = list(prompt)
    else:
        raise _BadRequest("'prompt' must be a string or a non-empty list of strings.", "prompt")
    for text in prompts:
        if not text:
            raise _BadRequest("'prompt' must not be empty.", "prompt")
        if len(text) > limits.max_prompt_chars:
            raise _BadRequest(
                f"'prompt' is {len(text)} characters long; the limit is {limits.max_prompt_chars}.",
                "prompt",
            )
        if (bad := text_problem(text)) is not None:
            raise _BadRequest(f"'prompt' contains a {bad}.", "prompt")
    return prompts


def _stop(body: dict[str, Any]) -> tuple[str, ...]:
    value = body.get("stop")
    stop: tuple[str, ...]
    if value is None:
        stop = ()
    elif isinstance(value, str):
        stop = (value,)
    elif isinstance(value, list) and all(isinstance(s, str) for s in value):
        stop = tuple(value)
    else:
        raise _BadRequest("'stop' must be a string or a list of strings.", "stop")
    if len(stop) > MAX_STOP_STRINGS or any(not s or len(s) > MAX_STOP_CHARS for s in stop):
        raise _BadRequest(
            f"'stop' takes at most {MAX_STOP_STRINGS} non-empty strings of at most "
            f"{MAX_STOP_CHARS} characters.",
            "stop",
        )
    for text in stop:
        if (bad := text_problem(text)) is not None:
            raise _BadRequest(f"'stop' contains a {bad}.", "stop")
    return stop


def _lora_name(value: Any) -> str:
    """A valid ``lora_name`` (the name requests put in ``model``), else 400."""
    if (
        not isinstance(value, str)
        or not value.strip()
        or len(value) > MAX_LORA_NAME_CHARS
        or text_problem(value) is not None
    ):
        raise _BadRequest(
            f"'lora_name' must be a non-empty name of at most {MAX_LORA_NAME_CHARS} "
            "printable characters.",
            "lora_name",
        )
    return value


def confined_adapter(path: str, roots: Iterable[str | os.PathLike[str]]) -> str | None:
    """The resolved ``path`` when it is a LoRA adapter folder inside one of ``roots``, else None.

    Links are resolved before the check (``a/../b``, a link inside a root that points out), and
    the resolved folder is what the worker loads. Touches the filesystem: call it in a thread.

    >>> confined_adapter("/srv/adapters/../../etc", ["/srv/adapters"]) is None
    True
    """
    candidate = Path(path)
    if not candidate.is_absolute():
        log.info("refused adapter %r: not an absolute path", path)
        return None
    try:
        resolved = candidate.resolve()
        inside = any(resolved.is_relative_to(Path(root).resolve()) for root in roots)
        found = inside and is_adapter(resolved)
    except (OSError, RuntimeError, ValueError) as exc:  # a link loop, a name too long, ...
        log.info("refused adapter %r: %s", path, exc)
        return None
    if not inside:
        log.info("refused adapter %r: %s is outside the adapter folders", path, resolved)
        return None
    if not found:
        log.info("refused adapter %r: %s is not a LoRA adapter folder", path, resolved)
        return None
    return str(resolved)


def request_tokens(prompts: Sequence[str], n: int, max_tokens: int) -> int:
    """An upper bound of the tokens a request puts into a batch, without a tokenizer.

    Each of the ``n`` rows of every prompt holds the prompt and up to ``max_tokens`` new
    tokens; a prompt counts its UTF-8 bytes (a byte-level BPE token is at least one byte).

    >>> request_tokens(["genre:", "é"], n=2, max_tokens=10)
    56
    """
    return sum(n * (len(p.encode("utf-8", "surrogatepass")) + max_tokens) for p in prompts)


def _check_budget(prompts: Sequence[str], n: int, max_tokens: int, limits: ServeSettings) -> None:
    if n * len(prompts) > limits.max_n:
        raise _BadRequest(
            f"{len(prompts)} prompts × n={n} asks for {n * len(prompts)} completions; "
            f"the limit is {limits.max_n}.",
            "n",
        )
    tokens = request_tokens(prompts, n, max_tokens)
    if tokens > limits.max_request_tokens:
        raise _BadRequest(
            f"This request needs up to {tokens} tokens ((prompt + max_tokens) × n, prompts "
            f"counted in UTF-8 bytes); this server's max_request_tokens is "
            f"{limits.max_request_tokens}. Send fewer or shorter prompts, a smaller n or "
            "max_tokens.",
            "prompt",
            status=413,
            code="request_too_large",
        )


def parse_completion_body(
    body: Any,
    limits: ServeSettings,
    served: Sequence[str],
    adapters: Mapping[str, AdapterRef] | None = None,
) -> list[GenerationRequest]:
    """Validate an OpenAI completions body; one request per prompt.

    ``served`` are the default model's names; a ``model`` in ``adapters`` generates with that
    adapter. Raises ``_BadRequest`` with the HTTP status (400, 404 for a model this server does
    not serve, 413 over ``max_request_tokens``) and a message naming the parameter.
    """
    if not isinstance(body, dict):
        raise _BadRequest("The request body must be a JSON object.")
    adapter = _served_model(body, served, adapters or {})
    for flag in ("stream", "echo"):
        if body.get(flag):
            raise _BadRequest(f"'{flag}' is not supported by this server.", flag)
    if body.get("logprobs") is not None:
        raise _BadRequest("'logprobs' is not supported by this server.", "logprobs")
    prompts = _prompts(body, limits)
    n = _integer(body, "n", 1, 1, limits.max_n)
    max_tokens = _integer(body, "max_tokens", 16, 1, limits.max_tokens)
    _check_budget(prompts, n, max_tokens, limits)
    temperature = _number(body, "temperature", 1.0, 0.0, 2.0)
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0)
    if top_p == 0.0:
        raise _BadRequest("'top_p' must be greater than 0.", "top_p")
    stop = _stop(body)
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise _BadRequest("'seed' must be an integer.", "seed")
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise _BadRequest(f"'seed' must be between 0 and {MAX_SEED}, got {seed}.", "seed")
    avoid_known = body.get("avoid_known", False)
    if not isinstance(avoid_known, bool):
        raise _BadRequest("'avoid_known' must be true or false.", "avoid_known")
    requests = [
        GenerationRequest(
            prompt=text,
            n=n,
            temperature=temperature,
            top_p=top_p,
            max_tokens=max_tokens,
            stop=stop,
            seed=seed,
            adapter=adapter,
            avoid_known=avoid_known,
        )
        for text in prompts
    ]
    for request in requests:
        # The contract's own check: nothing a worker cannot serve gets past the edge.
        if (problem := check_request(request)) is not None:
            raise _BadRequest(problem.message, problem.param)
    return requests


def completion_body(
    results: Sequence[GenerationResult], model: str, created: int | None = None
) -> dict[str, Any]:
    """The OpenAI ``text_completion`` object for the results of one request's prompts."""
    choices: list[dict[str, Any]] = []
    for result in results:
        finished = result.finished
        for j, text in enumerate(result.texts):
            reason: str | None = None
            if j < len(finished):
                reason = "stop" if finished[j] else "length"
            choice = {
                "text": text,
                "index": len(choices),
                "logprobs": None,
                "finish_reason": reason,
            }
            if len(result.scores) == len(result.texts):
                # An extension field (clients that do not know it ignore it): the completion's
                # mean token log-probability, the pipeline's plausibility score.
                choice["mgg_score"] = round(result.scores[j], 6)
            choices.append(choice)
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
    backend: ServedBackend,
    limits: ServeSettings | None = None,
    *,
    api_token: str | None = None,
    registry: CollectorRegistry | None = None,
    adapters: Iterable[AdapterRef] = (),
    adapter_roots: Iterable[str | os.PathLike[str]] = (),
    metrics_token: str | None = None,
    open_metrics: bool = False,
) -> web.Application:
    """The aiohttp application; the caller starts and closes ``backend``.

    Without ``api_token`` every route is open, so the server refuses hot reloads and shows
    ``/health`` details to nobody. ``/metrics`` serves ``registry`` (a new one by default)
    with the backend's metrics added. ``adapters`` are served from the start (e.g. each
    server's active model), each under its name. ``POST /v1/load_lora_adapter`` loads only
    adapter folders inside ``adapter_roots`` (none: every load is refused).

    ``/metrics`` takes ``metrics_token`` (a scraper's, which opens nothing else) or
    ``api_token``; ``open_metrics`` (the CLI's choice for a loopback bind without a
    ``metrics_token``) serves it to anyone.
    """
    token = api_token.encode() if api_token else None
    scrape = metrics_token.encode() if metrics_token else None
    routes = _Routes(backend, limits or ServeSettings(), token, adapters, adapter_roots)
    app = web.Application(middlewares=[_guard(token, scrape, open_metrics=open_metrics)])
    app.router.add_post("/v1/completions", routes.completions)
    app.router.add_get("/v1/models", routes.models)
    app.router.add_post("/v1/load_lora_adapter", routes.load_adapter)
    app.router.add_post("/v1/unload_lora_adapter", routes.unload_adapter)
    app.router.add_get("/health", routes.health)
    app.router.add_get("/metrics", _metrics_route(registry or CollectorRegistry(), backend))
    return app


def _metrics_route(registry: CollectorRegistry, backend: ServedBackend) -> Handler:
    watch_client(registry, backend)

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=exposition(registry), headers={"Content-Type": CONTENT_TYPE})

    return metrics


def _has_token(request: web.Request, token: bytes | None) -> bool:
    """Whether ``request`` carries ``Authorization: Bearer <token>`` (never, without a token)."""
    if token is None:
        return False
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    try:
        presented = given.encode("utf-8")
    except UnicodeEncodeError:  # bytes that are not UTF-8 arrive as surrogate escapes
        return False
    return scheme.lower() == "bearer" and hmac.compare_digest(presented, token)


def _accepted(
    path: str, token: bytes | None, scrape: bytes | None, *, open_metrics: bool
) -> list[bytes]:
    """The tokens that open ``path`` (empty: open to anyone).

    >>> _accepted("/v1/models", b"api", b"scrape", open_metrics=True)
    [b'api']
    >>> _accepted("/metrics", b"api", b"scrape", open_metrics=False)
    [b'scrape', b'api']
    >>> _accepted("/metrics", b"api", None, open_metrics=True)
    []
    """
    if path == "/health":
        return []
    if path == "/metrics":
        return [] if open_metrics else [t for t in (scrape, token) if t is not None]
    return [token] if token is not None else []


def _guard(token: bytes | None, scrape: bytes | None, *, open_metrics: bool) -> Middleware:
    """Middleware: check the bearer token (not for /health; /metrics: the scrape token too);
    errors become OpenAI bodies."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        accepted = _accepted(request.path, token, scrape, open_metrics=open_metrics)
        if accepted and not any(_has_token(request, t) for t in accepted):
            return error_response(
                401,
                "Invalid or missing API key (send 'Authorization: Bearer <token>').",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
        try:
            return await handler(request)
        except _BadRequest as exc:
            return error_response(exc.status, str(exc), param=exc.param, code=exc.code)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return error_response(exc.status, exc.reason, code=str(exc.status))
        except Exception:
            log.exception("unexpected error serving %s %s", request.method, request.path)
            return error_response(500, "Internal server error.", type_="server_error")

    return guard


def _is_json(content_type: str) -> bool:
    """
    >>> _is_json("application/json"), _is_json("application/vnd.api+json"), _is_json("text/plain")
    (True, True, False)
    """
    kind = content_type.lower()
    return kind == "application/json" or (
        kind.startswith("application/") and kind.endswith("+json")
    )


async def _json_body(request: web.Request) -> Any:
    """The parsed JSON body; 415 unless it is sent as JSON, 400 when it does not parse.

    A body over aiohttp's ``client_max_size`` (1 MiB) raises 413 from ``request.json()``.
    """
    if not _is_json(request.content_type):
        raise _BadRequest(
            "Send the body as JSON with 'Content-Type: application/json' "
            f"(got {request.content_type!r}).",
            status=415,
            code="unsupported_media_type",
        )
    try:
        return await request.json()
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise _BadRequest("The request body is not valid JSON.") from None


class _Routes:
    """The handlers of :func:`create_app`."""

    def __init__(
        self,
        backend: ServedBackend,
        limits: ServeSettings,
        token: bytes | None,
        adapters: Iterable[AdapterRef] = (),
        adapter_roots: Iterable[str | os.PathLike[str]] = (),
    ) -> None:
        self.backend = backend
        self.limits = limits
        self.token = token
        self.adapter_roots = tuple(adapter_roots)
        # The adapters served besides the default, by name, least recently used first; at most
        # limits.max_served_adapters. A load replaces an entry only once the new folder has
        # served a smoke request, so a name never points nowhere.
        self.adapters: OrderedDict[str, AdapterRef] = OrderedDict()
        for ref in adapters:
            self.adapters[ref.name] = ref
            self.adapters.move_to_end(ref.name)
        self._trim()

    def _trim(self) -> None:
        """Drop the least recently used names beyond ``max_served_adapters``."""
        while len(self.adapters) > self.limits.max_served_adapters:
            name, ref = self.adapters.popitem(last=False)
            log.info("stopped serving adapter %s (%s): least recently used", name, ref.path)

    def served(self) -> list[str]:
        names = [self.limits.model_name]
        if self.backend.model_name and self.backend.model_name not in names:
            names.append(self.backend.model_name)
        return names

    async def completions(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        requests = parse_completion_body(body, self.limits, self.served(), self.adapters)
        if requests[0].adapter is not None and requests[0].adapter.name in self.adapters:
            self.adapters.move_to_end(requests[0].adapter.name)
        tasks = [asyncio.ensure_future(self.backend.complete(r)) for r in requests]
        try:
            results = await asyncio.gather(*tasks)
        except WorkerError as exc:
            return worker_error_response(exc)
        finally:
            for task in tasks:
                task.cancel()
        # Like OpenAI, answer with the concrete model behind the alias (base + adapter version);
        # like vLLM, a loaded adapter answers under its own name.
        name = results[0].model if results and results[0].model else self.limits.model_name
        if requests[0].adapter is not None:
            name = requests[0].adapter.name
        return web.json_response(completion_body(results, name))

    async def models(self, request: web.Request) -> web.Response:
        created = int(time.time())
        default = self.limits.model_name
        data = [
            {
                "id": default,
                "object": "model",
                "created": created,
                "owned_by": "microgenre",
                "root": self.backend.model_name,
            }
        ]
        data += [
            {"id": name, "object": "model", "created": created, "owned_by": "microgenre"}
            | {"parent": default}
            for name in self.adapters
        ]
        return web.json_response({"object": "list", "data": data})

    def _check_reload_allowed(self) -> None:
        if not self.limits.allow_reload:
            raise _BadRequest(
                "Adapter reloads are disabled on this server ([serve] allow_reload = false).",
                status=403,
                code="reload_disabled",
            )
        if self.token is None:
            raise _BadRequest(
                "Hot reload is off: this server has no API token, so anyone who can reach it "
                "could swap the model. Set [serve] api_token (or MICROGENRE_SERVE_API_TOKEN) "
                "to allow POST /v1/load_lora_adapter.",
                status=403,
                code="reload_disabled",
            )

    async def load_adapter(self, request: web.Request) -> web.Response:
        self._check_reload_allowed()
        limits = self.limits
        body = await _json_body(request)
        path = body.get("lora_path") if isinstance(body, dict) else None
        if not isinstance(path, str) or not path or text_problem(path) is not None:
            raise _BadRequest("'lora_path' (a folder on the server) is required.", "lora_path")
        name = _lora_name(body.get("lora_name", limits.model_name))
        folder = await asyncio.to_thread(confined_adapter, path, self.adapter_roots)
        if folder is None:
            raise _BadRequest(ADAPTER_REFUSED, "lora_path")
        try:
            if name in self.served():
                await self.backend.reload(folder)
            else:
                await self._register(AdapterRef(name, folder))
        except AdapterRejectedError as exc:
            log.warning("refused adapter %s from %s: %s", name, folder, exc)
            raise _BadRequest(ADAPTER_REFUSED, "lora_path") from None
        except WorkerError as exc:
            return worker_error_response(exc)
        return web.Response(text=f"Success: LoRA adapter '{name}' added successfully.")

    async def _register(self, ref: AdapterRef) -> None:
        """Serve ``ref`` under its name once it generates; else keep the old.

        Raises :class:`AdapterRejectedError` (or the worker's error) and changes nothing.
        """
        # One short completion loads it in the worker, so a broken adapter is refused here
        # and the first real request does not pay for the load.
        smoke = GenerationRequest(DEFAULT_SMOKE_PROMPT, n=1, max_tokens=1, adapter=ref)
        await self.backend.complete(smoke)
        self.adapters[ref.name] = ref
        self.adapters.move_to_end(ref.name)
        log.info("serving adapter %s from %s", ref.name, ref.path)
        self._trim()

    async def unload_adapter(self, request: web.Request) -> web.Response:
        self._check_reload_allowed()
        body = await _json_body(request)
        name = _lora_name(body.get("lora_name") if isinstance(body, dict) else None)
        if name in self.served():
            raise _BadRequest(
                f"{name!r} is this server's default model; load another folder under the same "
                "name to replace it.",
                "lora_name",
            )
        if self.adapters.pop(name, None) is None:
            raise _BadRequest(
                f"The adapter {name!r} is not loaded.",
                "lora_name",
                status=404,
                code="model_not_found",
            )
        log.info("stopped serving adapter %s", name)
        return web.Response(text=f"Success: LoRA adapter '{name}' removed successfully.")

    async def health(self, request: web.Request) -> web.Response:
        """Liveness for anyone; the worker's details (pid, paths, last error) with the token."""
        data = self.backend.health()
        ready = bool(data.get("alive"))
        live = {"status": "ok" if ready else "unavailable", "ready": ready}
        served = [ref.to_dict() for ref in self.adapters.values()]
        shown = {**data, **live, "served": served} if _has_token(request, self.token) else live
        return web.json_response(shown, status=200 if ready else 503)
