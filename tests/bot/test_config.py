from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest

from bot.config import SECTIONS, Config, load_config
from bot.errors import ConfigError
from tests.conftest import REPO_ROOT

EXAMPLE = REPO_ROOT / "config.example.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_example_config_loads_and_equals_the_defaults() -> None:
    cfg = load_config(EXAMPLE, environ={})
    defaults = load_config(None, environ={})
    for section in SECTIONS:
        assert getattr(cfg, section) == getattr(defaults, section), section


def test_example_config_documents_every_key() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    documented = tomllib.loads(text)
    # Keys that must stay commented out (secrets) are documented as comments.
    commented = set(re.findall(r"^#\s*(\w+)\s*=", text, flags=re.MULTILINE))
    for section, cls in SECTIONS.items():
        assert section in documented, f"[{section}] missing from config.example.toml"
        for f in dataclasses.fields(cls):
            assert f.name in documented[section] or f.name in commented, f"{section}.{f.name}"


def test_defaults_need_no_file(tmp_path: Path) -> None:
    cfg = load_config(None, environ={})
    assert cfg.source == "built-in defaults"
    assert cfg.database_url == f"sqlite+aiosqlite:///{tmp_path / 'data' / 'microgenre.db'}"


def test_config_toml_in_working_directory_is_picked_up(tmp_path: Path) -> None:
    write(tmp_path, '[paths]\ndata_dir = "elsewhere"\n')
    cfg = load_config(None, environ={})
    assert cfg.data_dir == tmp_path / "elsewhere"


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    sub = tmp_path / "conf"
    sub.mkdir()
    path = sub / "c.toml"
    path.write_text('[paths]\ndata_dir = "d"\n', encoding="utf-8")
    assert load_config(path, environ={}).data_dir == sub / "d"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[database]\nurll = 'x'\n", "database.urll: unknown key"),
        ("[databse]\nurl = 'x'\n", "databse: unknown section"),
        ("[database]\nsqlite_busy_timeout_ms = 'soon'\n", "expected an integer, got 'soon'"),
        ("[database]\necho = 1\n", "database.echo: expected true or false"),
        ("[discord]\nshard_count = 1.5\n", "discord.shard_count: expected an integer"),
        ("database = 3\n", "database: expected a [section] table"),
        ("[database\n", "invalid TOML"),
    ],
)
def test_invalid_files_name_the_file_key_and_problem(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    message = str(info.value)
    assert message.startswith(str(path))
    assert expected in message
    assert "\n" not in message


def test_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.toml", environ={})


def test_environment_overrides_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[database]\nurl = 'sqlite+aiosqlite:///file.db'\necho = false\n")
    cfg = load_config(
        path,
        environ={
            "MICROGENRE_DATABASE_URL": "postgresql+asyncpg://u@h/db",
            "MICROGENRE_DATABASE_ECHO": "true",
            "MICROGENRE_DISCORD_DEV_GUILD_ID": "1234",
        },
    )
    assert cfg.database.url == "postgresql+asyncpg://u@h/db"
    assert cfg.database.echo is True
    assert cfg.discord.dev_guild_id == 1234


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"MICROGENRE_DISCORD_SHARD_COUNT.*expected an integer"):
        load_config(None, environ={"MICROGENRE_DISCORD_SHARD_COUNT": "many"})


def test_discord_token_from_environment_is_never_shown() -> None:
    secret = "MTIz.secret-token-value"
    cfg = load_config(None, environ={"DISCORD_TOKEN": secret})
    assert cfg.discord.token == secret
    assert secret not in repr(cfg)
    assert secret not in str(cfg.discord)


def test_config_is_frozen() -> None:
    cfg = load_config(None, environ={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.database = cfg.database  # type: ignore[misc]
    assert isinstance(cfg, Config)


def test_list_keys_can_be_overridden_from_the_environment() -> None:
    cfg = load_config(None, environ={"MICROGENRE_BOT_TRAIN_COMMAND": "python, train.py"})
    assert cfg.bot.train_command == ("python", "train.py")


def test_secrets_of_worker_and_serve_are_never_shown() -> None:
    environ = {"MICROGENRE_WORKER_API_TOKEN": "s3cret-w", "MICROGENRE_SERVE_API_TOKEN": "s3cret-s"}
    cfg = load_config(None, environ=environ)
    assert (cfg.worker.api_token, cfg.serve.api_token) == ("s3cret-w", "s3cret-s")
    assert "s3cret" not in repr(cfg)


def test_resident_adapters_cover_every_generation_slot(tmp_path: Path) -> None:
    """Requests of up to generation_slots servers generate at once; with fewer resident
    adapters than that, each batch evicted what the next one needed (reloaded from disk)."""
    path = tmp_path / "config.toml"
    path.write_text("[bot]\ngeneration_slots = 16\n[worker]\nmax_adapters = 8\n")
    config = load_config(str(path), environ={})
    assert config.worker.max_adapters == 16
    path.write_text("[bot]\ngeneration_slots = 4\n[worker]\nmax_adapters = 8\n")
    assert load_config(str(path), environ={}).worker.max_adapters == 8


def test_reconcile_days_defaults_to_a_week_and_is_validated(tmp_path: Path) -> None:
    assert load_config(None, environ={}).bot.reconcile_days == 7
    cfg = load_config(None, environ={"MICROGENRE_BOT_RECONCILE_DAYS": "0"})
    assert cfg.bot.reconcile_days == 0  # off
    for text, problem in [
        ("[bot]\nreconcile_days = -1\n", "bot: reconcile_days must be between 0 (off) and 3650"),
        ("[bot]\nreconcile_days = 1.5\n", "bot.reconcile_days: expected an integer"),
    ]:
        path = write(tmp_path, text)
        with pytest.raises(ConfigError, match=re.escape(problem)):
            load_config(path, environ={})
