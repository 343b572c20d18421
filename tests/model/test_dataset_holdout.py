"""`build_dataset` with the held-out protocol, and `like: a | b` blend examples."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from model.dataset import build_dataset, parent_genres, read_examples, write_dataset
from model.splits import HoldoutSpec, name_keys, read_dev_parents, read_lockbox
from model.textformat import BLEND_SEPARATOR
from tests.model.test_splits import EVERYNOISE, _records


def _conditions(like: str | None) -> list[str]:
    return like.split(BLEND_SEPARATOR) if like else []


def test_held_out_genres_are_nowhere_in_training_nor_known() -> None:
    ds = build_dataset(_records(), holdout=HoldoutSpec(dev_seed=3), like_fraction=1.0, seed=3)
    held = {k for g in ds.valid for k in name_keys(g.genre)}
    held |= {k for g in ds.lockbox for k in name_keys(g.genre)}
    assert ds.valid and ds.lockbox
    training = [e.genre for e in ds.train] + [c for e in ds.train for c in _conditions(e.like)]
    assert [n for n in training if name_keys(n) & held] == []
    assert [n for n in ds.known if name_keys(n) & held] == []
    # Word conditions that happen to be a held-out name ("dub") are not used either.
    assert ds.stats["like_examples"]["word"] > 0
    related = [r for names in ds.relations.values() for r in names] + list(ds.relations)
    assert [n for n in related if name_keys(n) & held] == []
    assert ds.stats["split"] == "everynoise-holdout"
    assert ds.stats["held_out"]["dev"] == len(ds.valid)


def test_held_out_extra_genres_are_dropped() -> None:
    plain = build_dataset(_records(), holdout=HoldoutSpec(dev_seed=3))
    held = plain.valid[0].genre
    ds = build_dataset(_records(), holdout=HoldoutSpec(dev_seed=3), extra_genres=[held, "x wave"])
    genres = {e.genre for e in ds.train}
    assert held not in genres and "x wave" in genres


def test_without_every_noise_names_the_split_is_random() -> None:
    records = [
        {"key": n, "display_name": n, "sources": [{"source": "rym", "extra": {}}]}
        for n in EVERYNOISE
    ]
    ds = build_dataset(records, holdout=HoldoutSpec(), valid_fraction=0.2, seed=1)
    assert ds.stats["split"] == "random" and 5 < len(ds.valid) < 40 and ds.lockbox == []


def _family() -> list[dict[str, Any]]:
    """Genres under two parents each (RYM tree, Wikipedia / Discogs), and single-parent ones."""
    records = []
    for i in range(60):
        name = f"word{i} fusion"
        sources = [
            {"source": "rym", "extra": {"parents": [f"parent{i % 7} rock"]}},
            {"source": "discogs", "extra": {"parents": [f"parent{i % 5} jazz"]}},
        ]
        records.append({"key": name, "display_name": name, "sources": sources})
        single = f"word{i} single"
        records.append(
            {
                "key": single,
                "display_name": single,
                "sources": [{"source": "everynoise", "extra": {"parents": ["pop"]}}],
            }
        )
    return records


def test_multi_parent_genres_teach_blends() -> None:
    records = _family()
    ds = build_dataset(records, valid_fraction=0.0, like_fraction=1.0, blend_fraction=1.0, seed=2)
    blends = [e for e in ds.train if e.like and BLEND_SEPARATOR in e.like]
    assert len(blends) == 60 == ds.stats["like_examples"]["blend"] == ds.stats["blend_eligible"]
    for example in blends:
        record = next(r for r in records if r["display_name"] == example.genre)
        assert sorted(_conditions(example.like)) == sorted(parent_genres(record))
    # Single-parent genres never get a blend.
    assert all("single" not in e.genre for e in blends)
    none = build_dataset(records, valid_fraction=0.0, like_fraction=1.0, blend_fraction=0.0)
    assert "blend" not in none.stats["like_examples"]


def test_the_blend_share_is_a_share_of_the_eligible_like_examples() -> None:
    ds = build_dataset(_family(), valid_fraction=0.0, like_fraction=1.0, blend_fraction=0.5)
    assert 15 <= ds.stats["like_examples"]["blend"] <= 45


def test_a_bad_blend_fraction_is_refused() -> None:
    from model.errors import DatasetError

    with pytest.raises(DatasetError, match="blend_fraction"):
        build_dataset(_family(), blend_fraction=1.5)


def test_the_folder_keeps_dev_parents_lockbox_and_relations(tmp_path: Path) -> None:
    ds = build_dataset(_records(), holdout=HoldoutSpec(dev_seed=3))
    folder = write_dataset(ds, tmp_path / "ds")
    assert [e.genre for e in read_examples(folder / "valid.jsonl")] == [e.genre for e in ds.valid]
    assert read_lockbox(folder) == ds.lockbox
    assert read_dev_parents(folder) == [g for g in ds.dev_held if g.parents]
    assert json.loads((folder / "relations.json").read_text()) == ds.relations
    stats = json.loads((folder / "stats.json").read_text())
    assert stats["held_out"]["lockbox"] == len(ds.lockbox)


def test_real_genres_csv_under_the_protocol(shared_data: Path) -> None:
    from model.dataset import records_from_genres_csv

    records = records_from_genres_csv(shared_data / "genres.csv")
    ds = build_dataset(records, holdout=HoldoutSpec())
    held = {k for g in ds.dev_held + ds.lockbox for k in name_keys(g.genre)}
    assert 450 < len(ds.valid) < 700 and 450 < len(ds.lockbox) < 700
    training = [e.genre for e in ds.train] + [c for e in ds.train for c in _conditions(e.like)]
    assert not [n for n in training + ds.known if name_keys(n) & held]
    assert ds.stats["like_examples"]["blend"] > 100


def test_the_served_fingerprint_still_knows_the_held_out_genres(tmp_path: Path) -> None:
    """Held-out genres are out of training, not out of reality: the fingerprint the dataset
    hands to its adapter (the one a fresh bot filters with) still knows them, so a model that
    re-invents one never delivers it as new. The eval builds its own fingerprint without them."""
    from model.filters import Fingerprint

    ds = build_dataset(_records(), holdout=HoldoutSpec(dev_seed=3))
    folder = write_dataset(ds, tmp_path / "ds")
    served = Fingerprint.load(folder / "known.fingerprint")
    held = [e.genre for e in ds.valid] + [g.genre for g in ds.lockbox]
    assert held
    assert [g for g in held if served.match(g) != "known"] == []
    assert all(served.match(g) == "known" for g in ds.known)
