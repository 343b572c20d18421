from __future__ import annotations

import pytest

from model.textformat import END_MARKER, build_prompt, clean_like, format_example, parse_completion


@pytest.mark.parametrize(
    ("like", "prompt"),
    [
        (None, "genre:"),
        ("", "genre:"),
        ("   ", "genre:"),
        ("Shoegaze", "like: shoegaze\ngenre:"),
        ("two\nlines", "like: two lines\ngenre:"),
    ],
)
def test_build_prompt(like: str | None, prompt: str) -> None:
    assert build_prompt(like) == prompt


def test_like_is_truncated() -> None:
    cleaned = clean_like("x" * 200)
    assert cleaned is not None and len(cleaned) == 48


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (" midwest shoegaze\n", "midwest shoegaze"),
        (" Midwest  Shoegaze \ngenre: more", "midwest shoegaze"),
        (" no end marker", None),
        ("\n", None),
        ("   \n", None),
        (" música\n", "música"),
    ],
)
def test_parse_completion(text: str, expected: str | None) -> None:
    assert parse_completion(text) == expected


def test_parse_without_marker_when_backend_cut_it() -> None:
    assert parse_completion(" lo-fi", require_end=False) == "lo-fi"


def test_format_example_round_trips_through_parse() -> None:
    text = format_example("Dark Ambient", like="ambient")
    prompt = build_prompt("ambient")
    assert text.startswith(prompt) and text.endswith(END_MARKER)
    assert parse_completion(text[len(prompt) :]) == "dark ambient"
