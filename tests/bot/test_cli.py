"""The `microgenre` CLI: database commands, stats, and how errors reach the user."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bot.cli import entry
from tests.conftest import REPO_ROOT


@pytest.fixture
def db_env(monkeypatch: pytest.MonkeyPatch, sqlite_url: str) -> str:
    monkeypatch.setenv("MICROGENRE_DATABASE_URL", sqlite_url)
    return sqlite_url


def test_upgrade_then_stats_prints_zero_counts(
    db_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert entry(["db", "upgrade"]) == 0
    capsys.readouterr()
    assert entry(["stats", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["training_genres"] == 0
    assert data["generated_genres"] == 0
    assert data["votes"] == 0
    assert data["favorites"] == 0
    assert data["active_model"] is None


def test_stats_refuses_an_unmigrated_database(
    db_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert entry(["stats", "--json"]) == 3
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "run `microgenre db upgrade`" in err


def test_db_current_and_downgrade(db_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert entry(["db", "current"]) == 0
    assert "current: none" in capsys.readouterr().out
    assert entry(["db", "upgrade"]) == 0
    assert entry(["db", "current"]) == 0
    assert "up to date" in capsys.readouterr().out
    assert entry(["db", "downgrade", "base"]) == 0
    assert "base (empty)" in capsys.readouterr().out
    assert entry(["stats"]) == 3


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[database]\nurll = 'x'\n", "database.urll: unknown key"),
        ("[database]\nsqlite_busy_timeout_ms = 'x'\n", "database.sqlite_busy_timeout_ms"),
    ],
)
def test_bad_config_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, needle: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    assert entry(["--config", str(path), "stats", "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert str(path) in lines[0] and needle in lines[0]


def test_invalid_database_url_is_reported(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MICROGENRE_DATABASE_URL", "not a url")
    assert entry(["stats"]) == 1
    assert "invalid database URL" in capsys.readouterr().err


def test_console_script_and_python_m_bot(tmp_path: Path, sqlite_url: str) -> None:
    env = {"MICROGENRE_DATABASE_URL": sqlite_url, "PATH": str(Path(sys.executable).parent)}
    script = Path(sys.executable).parent / "microgenre"
    upgrade = subprocess.run(
        [str(script), "db", "upgrade"], env=env, capture_output=True, text=True, timeout=120
    )
    assert upgrade.returncode == 0, upgrade.stderr
    stats = subprocess.run(
        [sys.executable, "-m", "bot", "stats", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
    )
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["training_genres"] == 0
    assert "Traceback" not in stats.stderr


def test_model_errors_escaping_a_command_are_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import click

    from bot.cli.common import run_cli
    from model.errors import ModelLoadError

    @click.group()
    def group() -> None:
        pass

    @group.command()
    def boom() -> None:
        raise ModelLoadError("adapter folder /nope has no adapter_config.json")

    assert run_cli(group, ["boom"]) == ModelLoadError.exit_code
    err = capsys.readouterr().err
    assert err.strip() == "Error: adapter folder /nope has no adapter_config.json"


def test_a_model_error_in_serve_keeps_its_exit_status(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from model.errors import ModelLoadError
    from model.worker import factory

    def refuse(config: object, **_: object) -> None:
        raise ModelLoadError("base model /nope not found")

    monkeypatch.setattr(factory, "make_local_client", refuse)
    assert entry(["serve", "--port", "0"]) == ModelLoadError.exit_code == 2
    assert capsys.readouterr().err.strip() == "Error: base model /nope not found"
