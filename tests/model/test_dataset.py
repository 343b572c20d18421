from __future__ import annotations

import json
from pathlib import Path

import pytest

from model.dataset import (
    Example,
    build_dataset,
    leading_word,
    read_examples,
    records_from_genres_csv,
    write_dataset,
)
from model.errors import DatasetError
from model.filters import Fingerprint, near_key


def _records(names: list[str], parents: dict[str, list[str]] | None = None) -> list[dict]:
    parents = parents or {}
    return [
        {"key": n, "display_name": n, "sources": [{"extra": {"parents": parents.get(n, [])}}]}
        for n in names
    ]


NAMES = [f"{w} {s}" for w in ("musica", "deep", "dark", "neo", "indie") for s in "abcdefghij"]


def test_split_is_deterministic_and_disjoint() -> None:
    a = build_dataset(_records(NAMES), seed=1, valid_fraction=0.3, max_leading_share=1.0)
    b = build_dataset(_records(list(reversed(NAMES))), seed=1, valid_fraction=0.3)
    assert [e.genre for e in a.valid] == [e.genre for e in b.valid]
    assert {e.genre for e in a.train}.isdisjoint({e.genre for e in a.valid})
    other = build_dataset(_records(NAMES), seed=2, valid_fraction=0.3)
    assert [e.genre for e in other.valid] != [e.genre for e in a.valid]


def test_spelling_variants_never_straddle_the_split() -> None:
    names = [f"{w}-core" for w in "abcdefghijklmnopqrst"] + [
        f"core {w}" for w in "abcdefghijklmnopqrst"
    ]
    ds = build_dataset(_records(names), valid_fraction=0.5, seed=0, min_leading_cap=100)
    train = {near_key(e.genre) for e in ds.train}
    valid = {near_key(e.genre) for e in ds.valid}
    assert train.isdisjoint(valid)


def test_leading_words_are_capped_and_reported() -> None:
    names = [f"musica {i}x" for i in range(50)] + [f"w{i} rock" for i in range(50)]
    ds = build_dataset(
        _records(names), valid_fraction=0.0, max_leading_share=0.1, min_leading_cap=5
    )
    musica = sum(leading_word(e.genre) == "musica" for e in ds.train)
    assert musica == 10  # 10 % of 100
    assert ds.stats["balance_dropped"] == 40
    assert ds.stats["leading_before"][0][:2] == ["musica", 50]
    assert all(count <= 10 for _, count, _ in ds.stats["leading_after"])


def test_like_examples_use_parents_or_words() -> None:
    names = [f"genre{i} rock" for i in range(200)]
    ds = build_dataset(
        _records(names, {n: ["classic rock"] for n in names}),
        valid_fraction=0.0,
        like_fraction=0.5,
        min_leading_cap=1000,
    )
    likes = [e.like for e in ds.train if e.like]
    assert 60 < len(likes) < 140
    words = {w for n in names for w in n.split()}
    assert set(likes) <= {"classic rock"} | words
    assert ds.stats["like_examples"]["related"] > 0


def test_extra_genres_train_but_are_not_known() -> None:
    ds = build_dataset(_records(NAMES), extra_genres=["glacier pop", "musica a"], seed=0)
    assert "glacier pop" in {e.genre for e in ds.train}
    assert "glacier pop" not in ds.known
    assert sum(e.genre == "musica a" for e in ds.train + ds.valid) <= 1


def test_empty_input_is_a_dataset_error() -> None:
    with pytest.raises(DatasetError):
        build_dataset([])


def test_write_and_read_round_trip(tmp_path: Path) -> None:
    ds = build_dataset(_records(NAMES), seed=0)
    folder = write_dataset(ds, tmp_path / "ds")
    assert read_examples(folder / "train.jsonl") == ds.train
    assert read_examples(folder / "valid.jsonl") == ds.valid
    stats = json.loads((folder / "stats.json").read_text())
    assert len(stats["data_hash"]) == 64
    fp = Fingerprint.load(folder / "known.fingerprint")
    assert all(name in fp for name in NAMES)
    (folder / "train.jsonl").write_text('{"genre": "x"}\nnot json\n')
    with pytest.raises(DatasetError, match=r"train\.jsonl:2"):
        read_examples(folder / "train.jsonl")


def test_example_text_uses_the_training_format() -> None:
    assert Example("Dark Ambient", "ambient").text() == "like: ambient\ngenre: dark ambient\n"


def test_real_genres_csv(shared_data: Path) -> None:
    records = records_from_genres_csv(shared_data / "genres.csv")
    assert len(records) > 8000
    ds = build_dataset(records)
    assert 6000 < len(ds.train) < 9000 and len(ds.valid) > 500
    # The cap brings "musica ..." down to at most 1 % of the training split.
    shares = {w: s for w, _, s in ds.stats["leading_after"]}
    assert shares.get("musica", 0) <= 0.0101


def _sourced(names: list[str], source: str) -> list[dict]:
    return [{"key": n, "display_name": n, "sources": [{"source": source}]} for n in names]


def test_source_weights_thin_training_only() -> None:
    main = [f"{w} rock" for w in ("czech", "dutch", "greek", "irish", "welsh", "latvian")] * 1
    other = [f"{w} {s} beat" for w in ("zap", "zip", "zop", "zup") for s in "abcdefghij"]
    records = _sourced(main, "everynoise") + _sourced(other, "rym")
    full = build_dataset(records, seed=3, valid_fraction=0.2)
    thin = build_dataset(records, seed=3, valid_fraction=0.2, source_weights={"rym": 0.5})
    # The validation split and the known genres do not depend on the weights.
    assert [e.genre for e in thin.valid] == [e.genre for e in full.valid]
    assert thin.known == full.known
    kept = {e.genre for e in thin.train}
    assert {e.genre for e in full.train} >= kept
    assert {g for g in main if g in {e.genre for e in full.train}} <= kept  # weight 1: all kept
    dropped_rym = [g for g in other if g in {e.genre for e in full.train} and g not in kept]
    assert 0 < len(dropped_rym) == thin.stats["source_thinned"] < 30
    assert thin.stats["source_weights"] == {"rym": 0.5}


def test_a_genre_listed_by_a_full_weight_source_is_kept() -> None:
    records = [
        {"key": n, "display_name": n, "sources": [{"source": "rym"}, {"source": "everynoise"}]}
        for n in NAMES
    ]
    ds = build_dataset(records, seed=1, valid_fraction=0.1, source_weights={"rym": 0.0})
    assert (
        ds.stats["source_thinned"] == 0
        and len(ds.train) + len(ds.valid) == len(NAMES) - ds.stats["balance_dropped"]
    )


def test_word_like_share_zero_conditions_on_related_genres_only() -> None:
    """With share 0 no genre is conditioned on one of its own words (which it contains
    verbatim): a genre with a related genre is conditioned on it, one without none stays
    unconditioned. The rest of the dataset does not move."""
    names = [f"genre{i} rock" for i in range(200)]
    related = {n: ["classic rock"] for n in names[:100]}
    records = _records(names, related)
    common = {"valid_fraction": 0.0, "like_fraction": 0.5, "min_leading_cap": 1000}
    before = build_dataset(records, **common)
    after = build_dataset(records, word_like_share=0.0, **common)
    assert [e.genre for e in after.train] == [e.genre for e in before.train]
    assert all(e.like in (None, "classic rock") for e in after.train)
    assert not any(e.like for e in after.train if e.genre not in related)
    conditioned = [e for e in after.train if e.genre in related and e.like]
    assert 30 < len(conditioned) < 70  # like_fraction 0.5 of the 100 with a related genre
    assert after.stats["like_examples"].get("word", 0) == 0
    # the default keeps some own-word conditions for genres that have a related one
    assert any(e.like not in (None, "classic rock") and e.genre in related for e in before.train)
    assert after.stats["word_like_share"] == 0.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"source_weights": {"rym": 1.5}},
        {"like_fraction": -0.1},
        {"like_fraction": 2},
        {"word_like_share": 1.5},
    ],
)
def test_bad_weights_are_dataset_errors(kwargs: dict) -> None:
    with pytest.raises(DatasetError):
        build_dataset(_records(NAMES), **kwargs)
