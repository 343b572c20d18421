"""The generation worker: a supervised model process with batching, and its clients.

Importing this package never imports torch; the model is loaded in the worker process only.

* :class:`~model.worker.client.WorkerClient` — local transport (child process, batching,
  back-pressure, supervision, hot reload);
* :class:`~model.worker.remote.RemoteClient` — the same interface over OpenAI's completions
  protocol (``microgenre serve`` or vLLM);
* :class:`~model.worker.pool.RemotePool` — one or more such servers (the remote transport);
* :func:`~model.worker.factory.make_client` — the one the configuration asks for;
* :mod:`~model.worker.server` — the aiohttp app behind ``microgenre serve``.
"""

from model.worker.client import PositionCallback, WorkerClient
from model.worker.errors import (
    AdapterRejectedError,
    InvalidRequestError,
    RemoteAuthError,
    WorkerBusyError,
    WorkerClosedError,
    WorkerCrashedError,
    WorkerError,
    WorkerStartError,
    WorkerTimeoutError,
    WorkerUnavailableError,
)
from model.worker.factory import make_client, make_local_client
from model.worker.health import worker_health
from model.worker.pool import RemotePool
from model.worker.remote import RemoteClient
from model.worker.settings import SamplerSpec, WorkerSettings

__all__ = [
    "AdapterRejectedError",
    "InvalidRequestError",
    "PositionCallback",
    "RemoteAuthError",
    "RemoteClient",
    "RemotePool",
    "SamplerSpec",
    "WorkerBusyError",
    "WorkerClient",
    "WorkerClosedError",
    "WorkerCrashedError",
    "WorkerError",
    "WorkerSettings",
    "WorkerStartError",
    "WorkerTimeoutError",
    "WorkerUnavailableError",
    "make_client",
    "make_local_client",
    "worker_health",
]
