"""`[discord] shard_ids` + `shard_count`: several bot processes split the shards."""

from __future__ import annotations

import pytest

from bot.config import load_config
from bot.errors import ConfigError


def test_shard_ids_from_the_environment() -> None:
    config = load_config(
        None,
        environ={"MICROGENRE_DISCORD_SHARD_COUNT": "4", "MICROGENRE_DISCORD_SHARD_IDS": "1, 3"},
    )
    assert config.discord.shard_ids == (1, 3)
    assert config.discord.shard_count == 4


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"MICROGENRE_DISCORD_SHARD_IDS": "0"}, "shard_ids needs shard_count"),
        ({"MICROGENRE_DISCORD_SHARD_COUNT": "2", "MICROGENRE_DISCORD_SHARD_IDS": "2"}, "outside"),
        ({"MICROGENRE_DISCORD_SHARD_COUNT": "2", "MICROGENRE_DISCORD_SHARD_IDS": "-1"}, "outside"),
        ({"MICROGENRE_DISCORD_SHARD_COUNT": "2", "MICROGENRE_DISCORD_SHARD_IDS": "1,1"}, "repeat"),
        ({"MICROGENRE_DISCORD_SHARD_COUNT": "-1"}, "shard_count must be >= 0"),
    ],
)
def test_invalid_shards_are_config_errors(env: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as info:
        load_config(None, environ=env)
    assert "discord" in str(info.value)


def test_worker_urls_are_checked() -> None:
    env = {"MICROGENRE_WORKER_TRANSPORT": "remote", "MICROGENRE_WORKER_URLS": "http://a, ftp://b"}
    with pytest.raises(ConfigError, match="ftp://b"):
        load_config(None, environ=env)
