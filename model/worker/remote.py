"""The remote transport: the same client interface over OpenAI's completions protocol.

Works against ``microgenre serve`` and against any OpenAI-compatible server that serves the
adapter under one model name, e.g. vLLM started with
``--enable-lora --lora-modules genre=<adapter dir>``. The API token travels only in the
``Authorization`` header and is never logged or shown in ``repr``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from typing import Any

import aiohttp

from model.protocol import AdapterRef, GenerationRequest, GenerationResult, PositionCallback
from model.worker.errors import (
    AdapterRejectedError,
    InvalidRequestError,
    RemoteAuthError,
    WorkerBusyError,
    WorkerCrashedError,
    WorkerError,
    WorkerTimeoutError,
    WorkerUnavailableError,
)
from model.worker.lifecycle import ClientLifecycle

log = logging.getLogger(__name__)


def base_url(url: str) -> str:
    """The server root, whether or not the URL ends in ``/v1``.

    >>> base_url("http://127.0.0.1:8700/v1/"), base_url("http://gpu-box:8000")
    ('http://127.0.0.1:8700', 'http://gpu-box:8000')
    """
    root = url.strip().rstrip("/")
    if root.endswith("/v1"):
        root = root[: -len("/v1")]
    return root


def request_body(request: GenerationRequest, model: str) -> dict[str, Any]:
    """The OpenAI completions body for one request.

    >>> request_body(GenerationRequest("genre:", n=2, stop=("\\n",)), "genre")["stop"]
    ['\\n']
    """
    body: dict[str, Any] = {
        "model": model,
        "prompt": request.prompt,
        "n": request.n,
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
    }
    if request.stop:
        body["stop"] = list(request.stop)
    if request.seed is not None:
        body["seed"] = request.seed
    if request.avoid_known:
        # This project's extension; other OpenAI-compatible servers (vLLM) ignore the field.
        body["avoid_known"] = True
    return body


def parse_response(data: Any, request: GenerationRequest) -> GenerationResult:
    """A :class:`GenerationResult` from an OpenAI ``text_completion`` body."""
    try:
        choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
        texts = tuple(str(c["text"]) for c in choices)
        reasons = [c.get("finish_reason") for c in choices]
        usage = data.get("usage") or {}
        model = str(data.get("model", ""))
    except (KeyError, TypeError, AttributeError):
        raise WorkerError("The generation server sent a malformed completion.") from None
    if len(texts) != request.n:
        raise WorkerError(
            f"The generation server sent {len(texts)} completions where {request.n} were asked."
        )
    told = all(r in ("stop", "length") for r in reasons)
    finished = tuple(r == "stop" for r in reasons) if told else ()
    return GenerationResult(
        texts=texts,
        model=model,
        prompt_tokens=int(usage.get("prompt_tokens", 0) or 0),
        completion_tokens=int(usage.get("completion_tokens", 0) or 0),
        finished=finished,
        scores=choice_scores(choices),
    )


def choice_scores(choices: list[Any]) -> tuple[float, ...]:
    """Each choice's plausibility score, or () unless every choice has one.

    Our server sends ``mgg_score``; an OpenAI-style server (vLLM) asked for logprobs sends
    ``logprobs.token_logprobs``, whose mean is the same score.

    >>> choice_scores([{"mgg_score": -1.5}, {"logprobs": {"token_logprobs": [-1.0, -2.0]}}])
    (-1.5, -1.5)
    >>> choice_scores([{"mgg_score": -1.5}, {"logprobs": None}])
    ()
    """
    scores = []
    for choice in choices:
        score = choice.get("mgg_score") if isinstance(choice, dict) else None
        if not isinstance(score, int | float) or isinstance(score, bool):
            logprobs = choice.get("logprobs") if isinstance(choice, dict) else None
            values = logprobs.get("token_logprobs") if isinstance(logprobs, dict) else None
            if not isinstance(values, list) or not values:
                return ()
            try:
                score = sum(float(v) for v in values) / len(values)
            except (TypeError, ValueError):
                return ()
        scores.append(float(score))
    return tuple(scores)


async def _error_details(response: aiohttp.ClientResponse) -> tuple[str, str | None]:
    """``error.message`` and ``error.code`` of an OpenAI error body (else the body's text)."""
    try:
        raw = await response.read()
    except aiohttp.ClientError:
        return f"HTTP {response.status}", None
    text = raw.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:200] or f"HTTP {response.status}", None
    message: Any = None
    code: Any = None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            message, code = error.get("message"), error.get("code")
        else:
            message = error
        message = message or data.get("message") or data.get("detail")
    text = str(message).strip() if message else text[:200] or f"HTTP {response.status}"
    return text, str(code) if code is not None else None


async def _error_message(response: aiohttp.ClientResponse) -> str:
    return (await _error_details(response))[0]


class RemoteClient(ClientLifecycle):
    """Async client of an OpenAI-compatible completions server (the ``remote`` transport)."""

    transport = "remote"

    def __init__(
        self,
        url: str,
        api_token: str | None = None,
        *,
        model: str = "genre",
        request_timeout_s: float = 120.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.url = base_url(url)
        # The served name of the default adapter (requests without an AdapterRef); a reload
        # moves it to a fresh name.
        self.model = model
        self._reloads = 0
        self.request_timeout_s = request_timeout_s
        self._token = api_token or None
        self._session = session
        self._own_session = session is None
        self._closed = False
        self._requests_served = 0
        self._completions_served = 0
        self._failures = 0
        self._last_error: str | None = None
        self._last_ok: float | None = None
        self._last_failed: float | None = None
        self._in_flight = 0
        self._server_model: str | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def __repr__(self) -> str:
        token = "set" if self._token else "none"
        return f"RemoteClient(url={self.url!r}, model={self.model!r}, token={token})"

    async def start(self, *, wait: bool = False) -> None:
        """Open the HTTP session; with ``wait``, check that the server answers."""
        if self._session is None:
            headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
            self._session = aiohttp.ClientSession(headers=headers)
        if wait:
            await self.wait_ready()

    async def wait_ready(self) -> None:
        """Raise a readable error unless the server lists its models with our token."""
        async with self._request("GET", "/v1/models") as response:
            if response.status != 200:
                raise await self._http_error(response)

    async def close(self) -> None:
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        if self._session is not None and self._own_session:
            await self._session.close()
        self._session = None

    @property
    def model_name(self) -> str | None:
        return self._server_model

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        if self._session is None or self._closed:
            raise WorkerUnavailableError("The generation client is not started.")
        timeout = aiohttp.ClientTimeout(total=self.request_timeout_s)
        return self._session.request(method, self.url + path, timeout=timeout, **kwargs)

    async def _http_error(self, response: aiohttp.ClientResponse) -> WorkerError:
        message, code = await _error_details(response)
        status = response.status
        if status in (401, 403):
            return RemoteAuthError(
                f"The generation server at {self.url} refused the API token "
                f"(HTTP {status}): {message}"
            )
        if status == 429:
            try:
                retry = float(response.headers.get("Retry-After", "5"))
            except ValueError:
                retry = 5.0
            return WorkerBusyError(retry, message if "try again" in message else None)
        if status in (400, 404, 413, 422):
            return InvalidRequestError(
                f"The generation server rejected the request (HTTP {status}): {message}"
            )
        if status == 504:
            return WorkerTimeoutError(f"The generation server timed out: {message}")
        if code == "worker_crashed":
            return WorkerCrashedError(message)
        return WorkerUnavailableError(
            f"The generation server at {self.url} failed (HTTP {status}): {message}"
        )

    async def complete(
        self, request: GenerationRequest, *, on_position: PositionCallback | None = None
    ) -> GenerationResult:
        """POST one request to ``/v1/completions``.

        OpenAI's protocol has no queue positions: when ``on_position`` is given, it is called
        once with an estimate from the server's ``/health`` (only ``microgenre serve`` has one).
        """
        if on_position is not None:
            task = asyncio.ensure_future(self._report_position(on_position))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._in_flight += 1
        try:
            result = await self._complete_once(request, load_on_404=request.adapter is not None)
        except WorkerError as exc:
            self._note_failure(exc)
            raise
        except TimeoutError:
            error: WorkerError = WorkerTimeoutError(
                f"The generation server did not answer within {self.request_timeout_s:g} s."
            )
            self._note_failure(error)
            raise error from None
        except aiohttp.ClientError as exc:
            error = WorkerUnavailableError(
                f"Cannot reach the generation server at {self.url} ({type(exc).__name__})."
            )
            self._note_failure(error)
            raise error from None
        finally:
            self._in_flight -= 1
        self._requests_served += 1
        self._completions_served += len(result.texts)
        self._last_ok = time.monotonic()
        self._server_model = result.model or self._server_model
        return result

    async def _complete_once(
        self, request: GenerationRequest, *, load_on_404: bool
    ) -> GenerationResult:
        """POST ``request`` under its adapter's served name; on "unknown model", load it and
        try once more (the server may have restarted or evicted it)."""
        ref = request.adapter
        model = ref.name if ref is not None else self.model
        async with self._request(
            "POST", "/v1/completions", json=request_body(request, model)
        ) as response:
            if response.status == 404 and load_on_404 and ref is not None:
                await response.read()
                await self._load_lora(ref.name, ref.path)
                return await self._complete_once(request, load_on_404=False)
            if response.status != 200:
                raise await self._http_error(response)
            try:
                data = await response.json(content_type=None)
            except ValueError:
                raise WorkerError("The generation server sent invalid JSON.") from None
        return parse_response(data, request)

    async def _load_lora(self, name: str, path: str) -> bool:
        """``/v1/load_lora_adapter`` (vLLM needs ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``).

        False when the server already holds ``name``; raises :class:`AdapterRejectedError`
        when it cannot load ``path``.
        """
        body = {"lora_name": name, "lora_path": path}
        try:
            async with self._request("POST", "/v1/load_lora_adapter", json=body) as response:
                if response.status == 200:
                    await response.read()
                    return True
                message, status = await _error_message(response), response.status
        except aiohttp.ClientError as exc:
            raise WorkerUnavailableError(
                f"Cannot reach the generation server at {self.url} ({type(exc).__name__})."
            ) from None
        except TimeoutError:
            raise WorkerTimeoutError("The generation server did not answer in time.") from None
        if status == 400 and "already" in message.lower():
            return False
        if status in (401, 403):
            raise RemoteAuthError(
                f"The generation server at {self.url} refused the API token "
                f"(HTTP {status}): {message}"
            )
        raise AdapterRejectedError(
            f"The generation server rejected the adapter {name} at {path} "
            f"(HTTP {status}): {message}"
        )

    async def load_adapter(self, adapter: AdapterRef) -> bool:
        """Have the server load ``adapter`` under its name (``POST /v1/load_lora_adapter``;
        ``microgenre serve`` generates with it before it answers 200).

        False when the server already held the name (vLLM refuses to load a name twice).
        Raises :class:`AdapterRejectedError` when the server cannot load it,
        :class:`RemoteAuthError`, or :class:`WorkerUnavailableError` when it is unreachable.
        """
        return await self._load_lora(adapter.name, adapter.path)

    async def unload_adapter(self, name: str) -> None:
        """Stop serving ``name`` (``POST /v1/unload_lora_adapter``); a failure is only logged."""
        await self._retire(name)

    async def _report_position(self, on_position: PositionCallback) -> None:
        try:
            data = await self._get_health()
            queued = data.get("queue_length")
            if isinstance(queued, int):
                outcome = on_position(queued)
                if asyncio.iscoroutine(outcome):
                    await outcome
        except Exception as exc:  # a missing estimate must never fail the request
            log.debug("no queue position from %s: %s", self.url, exc)

    def _note_failure(self, exc: Exception) -> None:
        self._failures += 1
        self._last_error = str(exc)
        self._last_failed = time.monotonic()

    async def reload(self, adapter: str | os.PathLike[str] | None) -> None:
        """Serve another adapter folder (a path *on the server*) for requests without one.

        ``microgenre serve`` swaps the adapter under the current name atomically (the old one
        serves until the new one passed its smoke test). vLLM refuses a name it holds, so the
        folder is loaded under a new served name and the old name is retired only once that
        worked: a failed load leaves the current adapter serving.
        """
        if adapter is None:
            raise AdapterRejectedError("A remote server cannot be switched to the bare base model.")
        path, base = os.fspath(adapter), self.model.split("@", 1)[0]
        if await self._load_lora(self.model, path):
            return
        for _ in range(8):  # names a previous run of this client may have left on the server
            self._reloads += 1
            name = f"{base}@{self._reloads}"
            if await self._load_lora(name, path):
                break
        else:
            raise AdapterRejectedError(f"The generation server holds every name like {name}.")
        old, self.model = self.model, name
        await self._retire(old)

    async def _retire(self, name: str) -> None:
        """Unload ``name`` from the server; a failure only leaves it loaded (logged)."""
        try:
            async with self._request(
                "POST", "/v1/unload_lora_adapter", json={"lora_name": name}
            ) as response:
                await response.read()
        except (aiohttp.ClientError, TimeoutError, WorkerError) as exc:
            log.warning("could not unload the old adapter %s: %s", name, exc)

    async def _get_health(self) -> dict[str, Any]:
        async with self._request("GET", "/health") as response:
            if response.status in (401, 403):
                raise await self._http_error(response)
            try:
                data = await response.json(content_type=None)
            except ValueError:
                data = None
            if not isinstance(data, dict):
                return {"alive": response.status == 200}
            if "alive" not in data:  # serve without the token: liveness only, {status, ready}
                data["alive"] = response.status == 200 and data.get("ready", True) is True
            return data

    def health(self) -> dict[str, Any]:
        """What this client has seen (call :meth:`fetch_health` for the server's view)."""
        return {
            "transport": self.transport,
            "url": self.url,
            "model": self._server_model or self.model,
            # Whether the last exchange with the server succeeded.
            "alive": self._last_ok is not None
            and (self._last_failed is None or self._last_ok > self._last_failed),
            "in_flight": self._in_flight,
            "requests_served": self._requests_served,
            "completions_served": self._completions_served,
            "failures": self._failures,
            "last_error": self._last_error,
            "last_ok_age_s": (
                round(time.monotonic() - self._last_ok, 3) if self._last_ok is not None else None
            ),
        }

    async def fetch_health(self) -> dict[str, Any]:
        """The server's ``/health`` (plus this client's counters under ``client``)."""
        try:
            data = await self._get_health()
        except WorkerError as exc:
            data = {"alive": False, "error": str(exc)}
        except (aiohttp.ClientError, TimeoutError) as exc:
            data = {"alive": False, "error": f"cannot reach {self.url} ({type(exc).__name__})"}
        data = dict(data)
        data["transport"] = self.transport
        data["client"] = self.health()
        return data
