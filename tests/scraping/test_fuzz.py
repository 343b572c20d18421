"""Whatever the input, parsers return a report or raise ParseError: never another exception."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scraping.everynoise import parse_genre_page, parse_list_page, parse_main_page
from scraping.files import decode_utf8, parse_document
from scraping.records import ParseError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "scraping"
PAGES = [
    (FIXTURES / name).read_text(encoding="utf-8")
    for name in (
        "everynoise_main_small.html",
        "everynoise_main_browser_small.html",
        "everynoise1d_small.html",
        "everynoise_genre_small.html",
    )
]
NAMES = ["x.html", "x.csv", "x.json", "x.txt", "x.yaml", "x"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["genres", "name", "genre", "children", "classes", "url", "key", "id"])
            | st.text(max_size=5),
            inner,
            max_size=4,
        )
    ),
    max_leaves=12,
)


def parses_or_refuses(name: str, text: str) -> None:
    try:
        parse_document(name, text)
    except ParseError as exc:
        assert "\n" not in str(exc)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(page=st.sampled_from(PAGES), start=st.integers(0, 4000), length=st.integers(0, 4000))
def test_any_slice_of_a_page(page: str, start: int, length: int) -> None:
    piece = page[start : start + length]
    for parser in (parse_main_page, parse_list_page, parse_genre_page):
        with contextlib.suppress(ParseError):
            parser(piece)
    parses_or_refuses("x.html", piece)


@settings(max_examples=150, deadline=None)
@given(name=st.sampled_from(NAMES), text=st.text(max_size=300))
def test_any_text(name: str, text: str) -> None:
    parses_or_refuses(name, text)


@settings(max_examples=200, deadline=None)
@given(value=json_values)
def test_any_json_document(value: object) -> None:
    parses_or_refuses("x.json", json.dumps(value))


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=200))
def test_any_bytes(data: bytes) -> None:
    try:
        text, _ = decode_utf8(data)
    except ParseError:
        return
    parses_or_refuses("x.csv", text)
