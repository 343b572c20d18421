"""make_client: the transport and settings come from the configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import load_config
from bot.errors import ConfigError
from model.base import DEFAULT_BASE_MODEL
from model.worker.client import WorkerClient
from model.worker.factory import default_adapter, make_client, sampler_spec
from model.worker.pool import RemotePool


def test_local_transport_is_the_default(tmp_path: Path) -> None:
    config = load_config(None, environ={"MICROGENRE_WORKER_BATCH_WINDOW_MS": "5"})
    client = make_client(config)
    assert isinstance(client, WorkerClient)
    assert client.settings.batch_window_ms == 5
    assert client.spec.base_model == DEFAULT_BASE_MODEL
    assert client.spec.adapter == default_adapter()
    assert client.spec.data_dir == str(tmp_path / "data")


def test_remote_transport_with_token_from_the_environment() -> None:
    config = load_config(
        None,
        environ={
            "MICROGENRE_WORKER_TRANSPORT": "remote",
            "MICROGENRE_WORKER_URL": "http://gpu-box:8000/v1/",
            "MICROGENRE_WORKER_API_TOKEN": "hunter2",
        },
    )
    client = make_client(config)
    assert isinstance(client, RemotePool)
    assert client.url == "http://gpu-box:8000"
    assert client.model == "genre"
    assert "hunter2" not in repr(client) and "hunter2" not in repr(config)


def test_remote_transport_over_several_servers() -> None:
    config = load_config(
        None,
        environ={
            "MICROGENRE_WORKER_TRANSPORT": "remote",
            "MICROGENRE_WORKER_URLS": "http://gpu-a:8000/v1, http://gpu-b:8000",
            "MICROGENRE_WORKER_REMOTE_MAX_N": "16",
        },
    )
    client = make_client(config)
    assert isinstance(client, RemotePool)
    assert client.urls == ["http://gpu-a:8000", "http://gpu-b:8000"]
    assert client.max_n == 16


def test_adapter_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    file = tmp_path / "conf" / "config.toml"
    file.write_text('[model]\nadapter = "adapters/v3"\nbase_model = "./tiny"\n')
    (tmp_path / "conf" / "tiny").mkdir()
    spec = sampler_spec(load_config(file))
    assert spec.adapter == str(tmp_path / "conf" / "adapters" / "v3")
    assert spec.base_model == str(tmp_path / "conf" / "tiny")


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("transport", "carrier-pigeon", "transport must be 'local' or 'remote'"),
        ("heartbeat_timeout_s", "0.5", "heartbeat_timeout_s must be greater"),
        ("queue_size", "0", "queue_size must be >= 1"),
    ],
)
def test_invalid_worker_settings_are_config_errors(key: str, value: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        load_config(None, environ={f"MICROGENRE_WORKER_{key.upper()}": value})


def test_example_config_documents_worker_and_serve() -> None:
    from tests.conftest import REPO_ROOT

    config = load_config(REPO_ROOT / "config.example.toml")
    assert config.worker.transport == "local"
    assert config.serve.host == "127.0.0.1"
    assert config.serve.api_token is None


@pytest.mark.parametrize(("quantize", "restrict"), [("true", "true"), ("false", "false")])
def test_the_worker_loads_the_fast_path_the_config_names(quantize: str, restrict: str) -> None:
    """The worker, `generate` and `serve` read the same [model] keys (config.model.fast())."""
    environ = {"MICROGENRE_MODEL_QUANTIZE": quantize, "MICROGENRE_MODEL_RESTRICT_HEAD": restrict}
    config = load_config(None, environ=environ)
    spec = sampler_spec(config)
    assert spec.fast == config.model.fast()
    assert spec.fast.quantize is (quantize == "true")
    assert spec.fast.restrict_head is (restrict == "true")
    client = make_client(config)
    assert isinstance(client, WorkerClient)
    assert client.health()["fast"] == {
        "quantize": quantize == "true",
        "restrict_head": restrict == "true",
    }
