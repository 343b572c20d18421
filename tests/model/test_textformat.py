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


def test_blend_like_joins_two_cleaned_parents() -> None:
    from model.textformat import BLEND_SEPARATOR, blend_like

    assert BLEND_SEPARATOR == " | "
    assert blend_like(" Shoegaze ", "Black  Metal") == "shoegaze | black metal"
    assert build_prompt(blend_like("shoegaze", "black metal")) == (
        "like: shoegaze | black metal\ngenre:"
    )


def test_blend_parts_are_limited_separately() -> None:
    from model.textformat import MAX_LIKE_CHARS, blend_like

    a, b = blend_like("x" * 200, "y" * 200).split(" | ")
    assert a == "x" * MAX_LIKE_CHARS and b == "y" * MAX_LIKE_CHARS
    # The two-part condition survives clean_like and build_prompt intact.
    assert clean_like(f"{'x' * 60}|{'y' * 60}") == f"{a} | {b}"
    assert build_prompt(f"{a} | {b}") == f"like: {a} | {b}\ngenre:"


@pytest.mark.parametrize(("a", "b"), [("pop|rock", "jazz"), ("jazz", "a | b"), ("  ", "jazz")])
def test_blend_like_refuses_a_bad_parent(a: str, b: str) -> None:
    from model.textformat import blend_like

    with pytest.raises(ValueError, match="blend"):
        blend_like(a, b)


@pytest.mark.parametrize(
    ("like", "cleaned"),
    [
        ("shoegaze|", "shoegaze"),
        (" | dub", "dub"),
        ("a|b|c", "a | b"),
        ("Pop | Rock", "pop | rock"),
    ],
)
def test_clean_like_keeps_at_most_two_parts(like: str, cleaned: str) -> None:
    assert clean_like(like) == cleaned
