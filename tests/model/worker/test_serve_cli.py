"""`microgenre serve` as a real process: curl-style requests, the remote client, clean shutdown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from model.protocol import GenerationRequest
from model.worker.errors import RemoteAuthError
from model.worker.remote import RemoteClient
from tests.conftest import REPO_ROOT
from tests.model.worker.fakes import write_adapter

TOKEN = "test-token-123"


def _gone(pid: int) -> bool:
    """True when the process no longer exists (a zombie awaiting its reaper counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "State:\tZ" in status


def _wait_gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.05)
    return _gone(pid)


@dataclass
class Started:
    url: str
    proc: subprocess.Popen[str]
    # What the server wrote to stderr up to its "Serving ..." line.
    banner: str


def _start(tmp_path: Path, token: str | None, *args: str, **variables: str) -> Started:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MICROGENRE_SERVE_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    env.update(variables)
    if token is not None:
        env["MICROGENRE_SERVE_API_TOKEN"] = token
    env["MICROGENRE_PATHS_DATA_DIR"] = str(tmp_path / "data")
    env["MICROGENRE_MODEL_ADAPTER"] = str(write_adapter(tmp_path / "adapter"))
    command = [sys.executable, "-m", "bot", "serve", "--port", "0"]
    command += ["--sampler-factory", "tests.model.worker.fakes:fake_factory", *args]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    url = None
    lines = []
    assert proc.stderr is not None
    for line in proc.stderr:  # ends if the process dies
        lines.append(line)
        if line.startswith("Serving "):
            url = line.split(" on ", 1)[1].split()[0]
            break
    if url is None:
        proc.kill()
        proc.wait(10)
        raise AssertionError("".join(lines))
    return Started(url, proc, "".join(lines))


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    started = _start(tmp_path, TOKEN)
    try:
        yield started.url, started.proc
    finally:
        _stop(started.proc)


async def _health(url: str, token: str | None = TOKEN) -> dict[str, object]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.get(url + "/health", headers=headers) as response,
    ):
        data = await response.json()
        assert isinstance(data, dict)
        return data


async def _reload(url: str, adapter: Path, token: str | None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = {"lora_name": "genre", "lora_path": str(adapter)}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url + "/v1/load_lora_adapter", json=body, headers=headers) as response,
    ):
        return response.status, await response.text()


async def test_without_a_token_reload_is_refused_and_health_is_liveness(tmp_path: Path) -> None:
    started = _start(tmp_path, None)
    try:
        assert "hot reload" in started.banner and "MICROGENRE_SERVE_API_TOKEN" in started.banner
        adapter = write_adapter(tmp_path / "other", tag="swapped")
        status, text = await _reload(started.url, adapter, None)
        assert status == 403 and "api_token" in text
        assert await _health(started.url, None) == {"status": "ok", "ready": True}
        assert await _health(started.url, "guess") == {"status": "ok", "ready": True}
        async with RemoteClient(started.url, None) as client:
            result = await client.complete(GenerationRequest("x"))
        assert result.model == "fake+base"  # the model was not swapped
    finally:
        _stop(started.proc)


async def test_with_the_token_reload_works_and_health_has_details(
    served: tuple[str, subprocess.Popen[str]], tmp_path: Path
) -> None:
    url, _ = served
    assert await _health(url, None) == {"status": "ok", "ready": True}
    details = await _health(url)
    assert isinstance(details["pid"], int) and "last_error" in details
    adapter = write_adapter(tmp_path / "data" / "adapters" / "other", tag="swapped")
    assert (await _reload(url, adapter, None))[0] == 401
    # Only from the adapter folders: <data_dir>/adapters by default.
    outside = write_adapter(tmp_path / "outside", tag="outside")
    status, text = await _reload(url, outside, TOKEN)
    assert status == 400 and "adapter folders" in text
    status, text = await _reload(url, adapter, TOKEN)
    assert status == 200, text
    async with RemoteClient(url, TOKEN) as client:
        assert (await client.complete(GenerationRequest("x"))).model == "fake+swapped"


async def test_openai_style_request_and_remote_client(
    served: tuple[str, subprocess.Popen[str]],
) -> None:
    url, _ = served
    body = '{"model": "genre", "prompt": "genre:", "n": 2, "max_tokens": 8, "stop": ["\\n"]}'
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url + "/v1/completions", data=body, headers=headers) as response,
    ):
        assert response.status == 200
        data = await response.json()
    assert [c["text"] for c in data["choices"]] == [
        "genre:|1.0|1.0|8|\n|None|0|base",
        "genre:|1.0|1.0|8|\n|None|1|base",
    ]
    assert data["model"] == "fake+base"
    async with RemoteClient(url, TOKEN) as client:
        result = await client.complete(GenerationRequest("x", n=3, temperature=0.6))
        assert len(result.texts) == 3 and result.model == "fake+base"
        health = await client.fetch_health()
        assert health["alive"] is True and health["requests_served"] == 2
    async with RemoteClient(url, None) as anonymous:
        with pytest.raises(RemoteAuthError, match="refused the API token"):
            await anonymous.complete(GenerationRequest("x"))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_signal_stops_server_and_worker(
    served: tuple[str, subprocess.Popen[str]], sig: signal.Signals
) -> None:
    url, proc = served
    worker_pid = (await _health(url))["pid"]
    assert isinstance(worker_pid, int) and not _gone(worker_pid)
    proc.send_signal(sig)
    assert proc.wait(15) == 0
    assert _wait_gone(worker_pid, 5)


async def test_worker_dies_with_a_killed_server(served: tuple[str, subprocess.Popen[str]]) -> None:
    url, proc = served
    worker_pid = (await _health(url))["pid"]
    assert isinstance(worker_pid, int)
    proc.kill()
    proc.wait(10)
    assert _wait_gone(worker_pid, 5)


def test_a_model_that_cannot_load_is_one_line(tmp_path: Path) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT)
    env["MICROGENRE_MODEL_BASE_MODEL"] = "broken"
    command = [sys.executable, "-m", "bot", "serve", "--port", "0"]
    command += ["--sampler-factory", "tests.model.worker.fakes:fake_factory"]
    done = subprocess.run(
        command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "Error: The generator could not start: could not load the model: "
        "The base model 'broken' does not exist."
    )
    assert "Traceback" not in done.stderr


async def _get_status(url: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        await response.read()
        return response.status


async def test_metrics_are_open_on_loopback_unless_a_scrape_token_is_set(tmp_path: Path) -> None:
    started = _start(tmp_path, TOKEN)  # binds 127.0.0.1
    try:
        assert await _get_status(started.url + "/metrics", None) == 200
        assert await _get_status(started.url + "/v1/models", None) == 401
    finally:
        _stop(started.proc)
    started = _start(tmp_path, TOKEN, MICROGENRE_SERVE_METRICS_TOKEN="scrape-me")
    try:
        assert await _get_status(started.url + "/metrics", None) == 401
        assert await _get_status(started.url + "/metrics", "scrape-me") == 200
        assert await _get_status(started.url + "/v1/models", "scrape-me") == 401
    finally:
        _stop(started.proc)


@pytest.mark.parametrize(
    ("args", "variables"),
    [(["--host", "0.0.0.0"], {}), ([], {"MICROGENRE_SERVE_HOST": "::"})],
    ids=["--host", "[serve] host"],
)
def test_a_public_bind_without_a_token_is_refused(
    tmp_path: Path, args: list[str], variables: dict[str, str]
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MICROGENRE_SERVE_")}
    env.update(variables, PYTHONPATH=str(REPO_ROOT))
    command = [sys.executable, "-m", "bot", "serve", "--port", "0", *args]
    command += ["--sampler-factory", "tests.model.worker.fakes:fake_factory"]
    done = subprocess.run(
        command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60
    )
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("Error: ") and "without an API token" in line
    assert "MICROGENRE_SERVE_API_TOKEN" in line and "--insecure" in line
    assert "Traceback" not in done.stderr and "Loading" not in done.stderr  # refused first


async def test_insecure_serves_a_public_bind_without_a_token(tmp_path: Path) -> None:
    started = _start(tmp_path, None, "--host", "0.0.0.0", "--insecure")
    try:
        assert "--insecure" in started.banner and "anyone" in started.banner
        host_port = started.url.rsplit(":", 1)[1]
        assert await _get_status(f"http://127.0.0.1:{host_port}/v1/models", None) == 200
    finally:
        _stop(started.proc)
