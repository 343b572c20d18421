"""The held-out protocol: dev and lockbox splits of the Every Noise names, removed everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from model.errors import DatasetError
from model.splits import (
    PARENT_FIELDS,
    RELATION_FIELDS,
    HoldoutSpec,
    loose_key,
    name_keys,
    split_records,
)

WORDS = ["velvet", "harbour", "glacier", "copper", "neon", "moss", "tidal", "amber", "lunar", "ash"]
HEADS = ["polka", "drone", "dub", "gaze", "trap", "waltz", "grime", "chant", "jazz", "rock"]
EVERYNOISE = [f"{a} {b}" for a in WORDS for b in HEADS]  # 100 names


def _source(source: str, name: str, **extra: Any) -> dict[str, Any]:
    return {"source": source, "source_name": name, "url": None, "extra": extra}


def _records() -> list[dict[str, Any]]:
    """Every Noise names (single parent: their head), the same names spelt otherwise in RYM
    (each under its head, with a child "<name> revival" under it), Wikipedia similar lists and
    a saved page's nearby genres."""
    records: list[dict[str, Any]] = []
    for name in EVERYNOISE:
        a, b = name.split()
        records.append(
            {
                "key": name,
                "display_name": name,
                "sources": [
                    _source(
                        "everynoise", name, parents=[b], similar=[f"{a} {h}" for h in HEADS[:3]]
                    )
                ],
            }
        )
        # The RYM spelling: capitals, an accent and a hyphen.
        rym = f"{a.replace('a', 'á', 1).title()}-{b.upper()}"
        records.append(
            {"key": rym, "display_name": rym, "sources": [_source("rym", rym, parents=[b])]}
        )
        child = f"{name} revival"
        records.append(
            {
                "key": child,
                "display_name": child,
                "sources": [_source("rym", child, parents=[rym, "revival"])],
            }
        )
    for head in HEADS:
        records.append(
            {
                "key": head,
                "display_name": head,
                "sources": [
                    _source("wikipedia", head, subgenres=[f"{w} {head}" for w in WORDS]),
                    _source("everynoise", head, similar=f"{WORDS[0]} {head}|{WORDS[1]} {head}"),
                ],
            }
        )
    return records


def _every_name(records: list[dict[str, Any]]) -> list[str]:
    """Every genre name the records mention: their own names and every relation list."""
    out = []
    for record in records:
        out += [record["key"], record["display_name"]]
        for source in record["sources"]:
            out.append(source.get("source_name") or "")
            for field in PARENT_FIELDS + RELATION_FIELDS:
                value = source["extra"].get(field) or []
                out += value.split("|") if isinstance(value, str) else value
    return [n for n in out if n]


def test_loose_key() -> None:
    assert loose_key("  Drum'n'Bass ") == "drum n bass"
    assert loose_key("Música—Popular") == loose_key("musica popular") == "musica popular"
    assert name_keys("R&B") == {"r b", "r and b"}


def test_no_held_out_key_is_left_anywhere() -> None:
    split = split_records(_records(), HoldoutSpec(dev_seed=3))
    held = {loose_key(g.genre) for g in split.dev + split.lockbox}
    assert held and all(split.is_held(g.genre) for g in split.dev + split.lockbox)
    left = [n for n in _every_name(split.records) if name_keys(n) & held]
    assert left == []
    # The RYM spellings of held-out Every Noise names went too (heads have no RYM record).
    spelt = [n for n in EVERYNOISE if n in held]
    assert spelt and split.stats["removed_by_source"]["rym"] == len(spelt)
    assert split.stats["removed_by_source"]["everynoise"] == len(held)


def test_the_splits_are_disjoint_tenths_and_reproducible() -> None:
    spec = HoldoutSpec(dev_seed=3)
    a, b = split_records(_records(), spec), split_records(list(reversed(_records())), spec)
    assert a.dev == b.dev and a.lockbox == b.lockbox
    dev, lockbox = {g.genre for g in a.dev}, {g.genre for g in a.lockbox}
    assert not dev & lockbox
    assert 3 <= len(dev) <= 20 and 3 <= len(lockbox) <= 20
    # Another dev seed draws another dev split, and the same lockbox.
    other = split_records(_records(), HoldoutSpec(dev_seed=4))
    assert [g.genre for g in other.lockbox] == [g.genre for g in a.lockbox]
    assert other.dev != a.dev
    assert not {g.genre for g in other.dev} & lockbox


def test_children_are_reattached_to_their_grandparent() -> None:
    split = split_records(_records(), HoldoutSpec(dev_seed=3))
    held = split.dev[0].genre
    b = held.split()[1]
    child = next(r for r in split.records if r["key"] == f"{held} revival")
    # The RYM parent "<Name>-<HEAD>" is held out: its child now hangs under the RYM head.
    assert child["sources"][0]["extra"]["parents"] == [b, "revival"]
    assert split.stats["parents_reattached"] >= len(split.dev) + len(split.lockbox)
    # The held-out genre keeps its own parent for the blend evaluation.
    assert split.dev[0].parents == (b,)


def test_a_held_out_parent_is_replaced_by_its_parents_recursively() -> None:
    records = [
        {"key": n, "display_name": n, "sources": [_source(src, n, parents=p)]}
        for n, src, p in [
            ("root", "rym", []),
            ("mid", "rym", ["root"]),
            ("low", "rym", ["mid"]),
            ("leaf", "rym", ["low", "other"]),
        ]
    ]
    records += [
        {"key": n, "display_name": n, "sources": [_source("everynoise", n)]}
        for n in ["mid", "low"] + [f"filler {i}" for i in range(200)]
    ]
    # Find a dev seed that holds out both "mid" and "low".
    for seed in range(2000):
        split = split_records(records, HoldoutSpec(dev_seed=seed, fraction=0.3))
        if split.is_held("mid") and split.is_held("low"):
            break
    else:
        pytest.fail("no seed holds out both")
    leaf = next(r for r in split.records if r["key"] == "leaf")
    assert leaf["sources"][0]["extra"]["parents"] == ["root", "other"]


@pytest.mark.parametrize(
    "kwargs", [{"fraction": 0.0}, {"fraction": 0.5}, {"dev_seed": 7, "lockbox_seed": 7}]
)
def test_a_bad_spec_is_a_dataset_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(DatasetError):
        HoldoutSpec(**kwargs)


def test_held_out_files_round_trip_and_name_a_bad_line(tmp_path: Path) -> None:
    from model.splits import LOCKBOX_FILE, read_lockbox, write_held_genres

    split = split_records(_records(), HoldoutSpec(dev_seed=3))
    write_held_genres(split.lockbox, tmp_path / LOCKBOX_FILE)
    assert read_lockbox(tmp_path) == split.lockbox
    (tmp_path / LOCKBOX_FILE).write_text('{"genre": "x"}\n{"parents": []}\n')
    with pytest.raises(DatasetError, match=r"lockbox\.jsonl:2"):
        read_lockbox(tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        read_lockbox(tmp_path / "nowhere")
