"""Normalisation table: display names (clean_name) and grouping keys (genre_key)."""

from __future__ import annotations

import pytest

from scraping.normalize import clean_name, genre_key
from scraping.records import GenreRecord, merge_extra, merge_records


@pytest.mark.parametrize(
    ("raw", "display", "key"),
    [
        ("Post-Rock", "post-rock", "post rock"),
        ("post rock", "post rock", "post rock"),
        ("POST  ROCK", "post rock", "post rock"),
        ("post_rock", "post_rock", "post rock"),
        ("Drum&nbsp;and&nbsp;Bass", "drum and bass", "drum and bass"),
        ("Drum &amp; Bass", "drum & bass", "drum and bass"),
        ("drum & bass", "drum & bass", "drum and bass"),
        ("Música Popular Brasileira", "música popular brasileira", "musica popular brasileira"),
        (
            "m&uacute;sica popular brasileira",
            "música popular brasileira",
            "musica popular brasileira",
        ),
        ("Musique Concrète", "musique concrète", "musique concrete"),
        ("Rock 'n' Roll", "rock 'n' roll", "rock 'n' roll"),
        ("Rock ’n’ Roll", "rock ’n’ roll", "rock 'n' roll"),
        ("Hip-Hop/Rap", "hip-hop/rap", "hip hop rap"),
        ("lo–fi", "lo–fi", "lo fi"),
        ("  k-pop\t", "k-pop", "k pop"),
        ("Nu-Metal!", "nu-metal!", "nu metal"),
        ("21st Century Classical", "21st century classical", "21st century classical"),
        # NFC: a decomposed accent becomes one character in the display name.
        ("cafe\u0301 music", "caf\u00e9 music", "cafe music"),
    ],
)
def test_normalisation_table(raw: str, display: str, key: str) -> None:
    assert clean_name(raw) == display
    assert genre_key(raw) == key


def test_record_keeps_display_name_and_groups_by_key() -> None:
    records = [
        GenreRecord.create("Post-Rock", "everynoise", extra={"x": 1, "datasets": ["a"]}),
        GenreRecord.create("post rock", "everynoise", url="u", extra={"x": 2, "datasets": ["b"]}),
        GenreRecord.create("Post Rock", "rym"),
    ]
    merged = merge_records(records)
    assert [(r.name, r.source, r.url) for r in merged] == [
        ("post-rock", "everynoise", "u"),
        ("post rock", "rym", None),
    ]
    assert merged[0].extra == {"x": 2, "datasets": ["a", "b"]}
    assert {r.key for r in merged} == {"post rock"}


def test_merge_extra_never_blanks_a_value() -> None:
    assert merge_extra({"x": 1, "parents": ["a"]}, {"x": None, "parents": []}) == {
        "x": 1,
        "parents": ["a"],
    }
