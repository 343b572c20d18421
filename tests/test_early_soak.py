"""The soak run starts when collection ends and goes on beside the other tests
(tests/early_soak.py): its test is moved last, and its process gets the isolated environment
every test gets."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from tests import early_soak
from tests.isolation import isolated_environment


@dataclass
class Item:
    name: str
    marks: set[str] = field(default_factory=set)

    def get_closest_marker(self, name: str) -> object | None:
        return name if name in self.marks else None


def test_soak_tests_move_last_and_the_others_keep_their_order() -> None:
    items = [Item("a"), Item("soak1", {"soak"}), Item("b", {"postgres"}), Item("soak2", {"soak"})]
    early_soak.soak_last(items)
    assert [i.name for i in items] == ["a", "b", "soak1", "soak2"]


def test_the_early_run_gets_no_developer_variable() -> None:
    env = isolated_environment(
        {
            "PATH": "/bin",
            "MICROGENRE_DATA_DIR": "/home/me/data",
            "MICROGENRE_TEST_POSTGRES_URL": "postgresql://x",
            "MICROGENRE_REQUIRE_POSTGRES": "1",
            "DISCORD_TOKEN": "secret",
        }
    )
    assert env == {
        "PATH": "/bin",
        "MICROGENRE_TEST_POSTGRES_URL": "postgresql://x",
        "MICROGENRE_REQUIRE_POSTGRES": "1",
    }


def test_a_run_that_was_never_started_is_started_when_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started: list[list[str]] = []

    class FakeProcess:
        returncode = 0

        def __init__(self, args: list[str], **kwargs: object) -> None:
            started.append(args)

        def communicate(self, timeout: float | None = None) -> tuple[str, str]:
            return "", "done"

        def poll(self) -> int:
            return self.returncode

    monkeypatch.setattr(early_soak.subprocess, "Popen", FakeProcess)
    run = early_soak.SoakRun(["--minutes", "2"])
    result = run.result(timeout=5)
    assert len(started) == 1 and started[0][-4:-2] == ["--minutes", "2"]
    assert result.returncode == 0 and result.stderr == "done"
    assert result.summary_path.name == "soak.json"
    run.start()  # a second start is a no-op
    assert len(started) == 1
    folder = result.summary_path.parent
    run.stop()
    assert not folder.exists()
