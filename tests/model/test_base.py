from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest

from model import base
from model.base import ModelSpec
from model.errors import ModelLoadError
from model.train.sft import TrainConfig
from model.train.votes import ServerRunConfig
from model.worker.settings import SamplerSpec


def test_auto_threads_is_half_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base.os, "cpu_count", lambda: 2)
    assert base.auto_threads() == 1
    monkeypatch.setattr(base.os, "cpu_count", lambda: 16)
    assert base.auto_threads() == 8
    monkeypatch.setattr(base.os, "cpu_count", lambda: None)
    assert base.auto_threads() == 1


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [("float32", "float32"), ("bf16", "bfloat16"), ("float16", "float16")],
)
def test_explicit_dtypes(dtype: str, expected: str) -> None:
    import torch

    assert base.pick_dtype(dtype, "cpu") == getattr(torch, expected)


def test_auto_dtype_on_cpu_follows_the_cpu_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(base, "cpu_supports_bf16", lambda: True)
    assert base.pick_dtype("auto", "cpu") == torch.bfloat16
    monkeypatch.setattr(base, "cpu_supports_bf16", lambda: False)
    assert base.pick_dtype("auto", "cpu") == torch.float32


@pytest.mark.parametrize(("call", "arg"), [("pick_dtype", "int8"), ("pick_device", "tpu")])
def test_unknown_names_are_load_errors(call: str, arg: str) -> None:
    with pytest.raises(ModelLoadError):
        if call == "pick_dtype":
            base.pick_dtype(arg, "cpu")
        else:
            base.pick_device(arg)


def test_cuda_requested_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert base.pick_device("auto") == "cpu"
    with pytest.raises(ModelLoadError, match="CUDA"):
        base.pick_device("cuda")


def test_other_base_models_pass_through(tmp_path: Path) -> None:
    assert base.resolve_base_model("microsoft/phi-1_5", tmp_path) == "microsoft/phi-1_5"
    assert not (tmp_path / "models").exists()


def test_the_packaged_gguf_is_found() -> None:
    path = base.gguf_path()
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000


def test_converted_cache_is_reused(tmp_path: Path) -> None:
    target = base.converted_path(tmp_path)
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")
    (target / "model.safetensors").write_bytes(b"")
    messages: list[str] = []
    assert base.ensure_converted(tmp_path, messages.append) == target
    assert messages == []


def test_missing_base_model_is_a_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="Cannot load base model"):
        base.load_base(str(tmp_path / "nothing"), data_dir=tmp_path)


def test_concurrent_conversions_convert_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes starting at once (two trainings, the bot and the worker) used to share
    one temporary folder: one removed it under the other, which crashed mid-write."""
    import threading
    import time

    calls: list[Path] = []

    def slow_convert(source: Path, folder: Path) -> None:
        calls.append(folder)
        (folder / "config.json").write_text("{}")
        time.sleep(0.3)  # the other caller starts meanwhile
        (folder / "model.safetensors").write_bytes(b"weights")

    monkeypatch.setattr(base, "_convert", slow_convert)
    monkeypatch.setattr(base, "gguf_path", lambda: tmp_path / "model.gguf")
    results: list[Path] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(base.ensure_converted(tmp_path, None))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    target = base.converted_path(tmp_path)
    assert results == [target, target]
    assert len(calls) == 1
    assert (target / "model.safetensors").read_bytes() == b"weights"
    assert sorted(p.name for p in target.parent.iterdir() if p.name != target.name + ".lock") == [
        target.name
    ]


@pytest.mark.parametrize("config", [TrainConfig, ServerRunConfig, SamplerSpec])
def test_every_loader_takes_a_model_spec_and_keeps_its_dict_flat(config: type[ModelSpec]) -> None:
    spec = config(base_model="tiny", device="cpu", dtype="float32", threads=2)
    assert isinstance(spec, ModelSpec)
    # Model cards, checkpoints and TrainConfig.from_dict read these keys at the top level.
    flat = asdict(spec)
    assert {name: flat[name] for name in asdict(ModelSpec())} == {
        "base_model": "tiny",
        "device": "cpu",
        "dtype": "float32",
        "threads": 2,
    }


def test_train_config_reads_the_flat_dict_it_writes() -> None:
    cfg = TrainConfig(base_model="tiny", device="cpu", epochs=2)
    data = cfg.to_dict()
    assert data["base_model"] == "tiny" and data["device"] == "cpu" and "model" not in data
    assert TrainConfig.from_dict(data) == cfg
