from __future__ import annotations

import pytest

from model.textformat import (
    BLEND_SEPARATOR,
    END_MARKER,
    blend_like,
    build_prompt,
    clean_like,
    format_example,
    parse_completion,
)


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


@pytest.mark.parametrize(
    ("like", "prompt"),
    [
        ("Shoegaze | Polka", "like: shoegaze | polka\ngenre:"),
        ("shoegaze|polka", "like: shoegaze | polka\ngenre:"),
        ("a\n| b", "like: a | b\ngenre:"),
        ("| dub", "like: dub\ngenre:"),
        ("a | b | c", "like: a | b\ngenre:"),
    ],
)
def test_a_blend_condition_keeps_its_two_parts(like: str, prompt: str) -> None:
    assert build_prompt(like) == prompt


def test_each_part_of_a_blend_is_limited_on_its_own() -> None:
    cleaned = clean_like("x" * 200 + " | " + "y" * 200)
    assert cleaned == "x" * 48 + BLEND_SEPARATOR + "y" * 48


def test_blend_like_cleans_both_parents_and_refuses_the_separator() -> None:
    assert blend_like(" Dream  Pop", "FINNISH polka") == "dream pop | finnish polka"
    assert blend_like("a" * 90, "b") == "a" * 48 + " | b"
    with pytest.raises(ValueError, match=r'may not contain "\|"'):
        blend_like("dub", "polka | jazz")
    with pytest.raises(ValueError, match="blank"):
        blend_like("  ", "polka")
    assert format_example("polkagaze", like=blend_like("polka", "shoegaze")) == (
        "like: polka | shoegaze\ngenre: polkagaze\n"
    )
