from __future__ import annotations

import json
from pathlib import Path

import pytest

from model.filters import Fingerprint, Moderator, near_key, validate


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("midwest shoegaze", None),
        ("drum & bass", None),
        ("rock 'n' roll", None),
        ("k-pop", None),
        ("música popular brasileira", None),
        ("2-step", None),
        ("", "empty"),
        ("a b c d e f g", "too_many_words"),
        ("x" * 49, "too_long"),
        ("<b>rock</b>", "markup"),
        ("see https://example.com", "markup"),
        ("[edm] trap", "markup"),
        ("genre: rock", "prompt_tag"),
        ("like: jazz", "prompt_tag"),
        ("this is great. really", "sentence"),
        ("rock, which is great", "sentence"),
        ("rock rock rock", "repetition"),
        ("123 456", "no_letters"),
        ("pop (live", "unbalanced"),
        ("rock \u2603", "bad_characters"),
        ("musica", "generic"),
        ("Song", "generic"),
        ("song cycle", None),
    ],
)
def test_validate(name: str, reason: str | None) -> None:
    assert validate(name) == reason


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("hip-hop", "hip hop"),
        ("hip-hop", "hiphop"),
        ("pop rock", "rock pop"),
        ("drum and bass", "drum & bass"),
        ("drum n bass", "drums and bass"),
        ("música sertaneja", "musica sertaneja"),
        ("breakbeats", "breakbeat"),
        ("polka music", "polka"),
        ("THE Blues", "blues"),
    ],
)
def test_near_key_collapses_variants(a: str, b: str) -> None:
    assert near_key(a) == near_key(b)


@pytest.mark.parametrize(("a", "b"), [("post rock", "post punk"), ("dub", "dubstep")])
def test_near_key_keeps_different_genres_apart(a: str, b: str) -> None:
    assert near_key(a) != near_key(b)


@pytest.mark.parametrize(
    ("candidate", "match"),
    [
        ("post-rock", "known"),
        ("Post Rock", "known"),
        ("rock post", "near_known"),
        ("post rocks", "near_known"),
        ("dream-pop", "known"),
        ("pop dream", "near_known"),
        ("space rock", None),
        ("post", None),
        # spacing variants the sorted near key alone misses
        ("neo-folk", "near_known"),
        ("neo folk", "near_known"),
        ("dreampop", "near_known"),
        ("postrock", "near_known"),
        ("folk neo wave", None),
    ],
)
def test_fingerprint_match(candidate: str, match: str | None) -> None:
    fp = Fingerprint.from_names(["post rock", "dream pop", "neofolk"])
    assert fp.match(candidate) == match
    assert (candidate in fp) == (match is not None)


def test_fingerprint_save_load_round_trip(tmp_path: Path) -> None:
    names = [f"genre {i}" for i in range(500)]
    fp = Fingerprint.from_names(names, meta={"genres": 500})
    path = fp.save(tmp_path / "known.fingerprint")
    loaded = Fingerprint.load(path)
    assert len(loaded) == 500 and loaded.meta["genres"] == 500
    assert all(name in loaded for name in names)
    assert "genre 500" not in loaded
    # Compact and holds no names.
    data = path.read_bytes()
    assert len(data) < 24 * 500 + 200
    assert b"genre 1" not in data


def test_fingerprint_rejects_garbage(tmp_path: Path) -> None:
    path = tmp_path / "bad"
    path.write_bytes(b"not a fingerprint")
    with pytest.raises(ValueError):
        Fingerprint.load(path)
    fp_path = Fingerprint.from_names(["a b"]).save(tmp_path / "ok")
    fp_path.write_bytes(fp_path.read_bytes()[:-3])
    with pytest.raises(ValueError):
        Fingerprint.load(fp_path)


@pytest.mark.parametrize(
    ("name", "offensive"),
    [
        ("midwest shoegaze", False),
        ("christian hardcore", False),
        ("dark ambient", False),
        ("fuck rock", True),
        ("shit gaze", True),
        ("nazi polka", True),
        ("rape core", True),
        ("hip hop coon", True),
    ],
)
def test_moderator(name: str, offensive: bool) -> None:
    assert Moderator().is_offensive(name) is offensive


def test_moderator_empty_batch() -> None:
    assert Moderator().flags([]) == []


def test_shared_data_real_genres_are_mostly_well_formed_and_known(shared_data: Path) -> None:
    from model.dataset import records_from_genres_csv

    records = records_from_genres_csv(shared_data / "genres.csv")
    names = [r["display_name"] for r in records]
    bad = [n for n in names if validate(n) is not None]
    assert len(bad) / len(names) < 0.01
    fp = Fingerprint.from_names(names)
    assert all(fp.match(n) == "known" for n in names)


@pytest.mark.parametrize(
    ("name", "grounded"),
    [
        ("toucan grunge", True),
        ("bubblegrunge", True),
        ("grunges", True),
        ("giyue", False),
        ("obsoud specey", False),
    ],
)
def test_grounded_needs_a_genre_word(name: str, grounded: bool) -> None:
    fp = Fingerprint.from_names(["bubble pop", "grunge"])
    assert fp.grounded(name) is grounded


def test_fingerprint_without_words_grounds_everything(tmp_path: Path) -> None:
    fp = Fingerprint(exact=[1], near=[2])
    loaded = Fingerprint.load(fp.save(tmp_path / "fp"))
    assert not loaded.has_words and loaded.grounded("giyue")
    words = Fingerprint.load(Fingerprint.from_names(["dub"]).save(tmp_path / "w"))
    assert words.has_words and not words.grounded("giyue")


@pytest.mark.parametrize(
    ("name", "allowed"),
    [
        ("jazz jazz", False),
        ("jazz jazz fusion", False),
        ("deep deep techno", True),  # "deep deep house" is real
        ("ye ye punk", True),
        ("new jazz of new jazz", True),  # repeated, but not twice in a row
        ("deep jazz", True),
    ],
)
def test_doubled_words_only_where_real_genres_double_them(name: str, allowed: bool) -> None:
    fp = Fingerprint.from_names(["deep deep house", "ye ye", "jazz", "jazz fusion"])
    assert fp.doubles_like_real(name) is allowed


def test_doubled_words_survive_save_load_and_union(tmp_path: Path) -> None:
    fp = Fingerprint.from_names(["deep deep house"])
    loaded = Fingerprint.load(fp.save(tmp_path / "fp"))
    assert loaded.doubles_like_real("deep deep techno")
    assert not loaded.doubles_like_real("ye ye punk")
    merged = loaded.union(Fingerprint.from_names(["ye ye"]))
    assert merged.doubles_like_real("ye ye punk") and merged.doubles_like_real("deep deep dub")


def test_fingerprint_file_without_doubled_words_still_loads(tmp_path: Path) -> None:
    # A file written before doubled words were recorded: no "doubled" header, no section.
    fp = Fingerprint.from_names(["deep deep house", "dub"])
    path = fp.save(tmp_path / "fp")
    data = path.read_bytes()
    header_start = len(b"MGFP1\n")
    header_end = data.index(b"\n", header_start)
    header = json.loads(data[header_start:header_end])
    n_doubled = header.pop("doubled")
    old = (
        data[:header_start]
        + json.dumps(header, sort_keys=True).encode()
        + b"\n"
        + data[header_end + 1 : len(data) - 8 * n_doubled]
    )
    path.write_bytes(old)
    loaded = Fingerprint.load(path)
    assert loaded.match("dub") == "known"
    assert not loaded.doubles_like_real("deep deep techno")  # unknown: strict
    assert loaded.doubles_like_real("deep techno")
