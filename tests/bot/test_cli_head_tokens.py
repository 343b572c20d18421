"""`microgenre model head-tokens` reads genre names from a CSV or a plain list."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.cli.calibrate import read_names


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("genre,source\ndark ambient,x\nk-pop,y\n", ["dark ambient", "k-pop"]),
        ("dark ambient\n\nk-pop\n", ["dark ambient", "k-pop"]),
        ("", []),
    ],
)
def test_read_names(tmp_path: Path, text: str, names: list[str]) -> None:
    path = tmp_path / "genres.txt"
    path.write_text(text, encoding="utf-8")
    assert read_names(path) == names
