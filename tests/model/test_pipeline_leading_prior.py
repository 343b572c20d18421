"""The leading-word prior: a leading word's share of a call is at most 1.5x its training share."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model.artifacts import FINGERPRINT, LEADING_WORDS, load_fingerprint
from model.dataset import LEADING_FILE, build_dataset, write_dataset
from model.filters import Fingerprint, LeadingPrior
from model.pipeline import GenrePipeline
from tests.model.test_pipeline import KNOWN, ScriptedBackend

# "jazz" leads 2 of 100 training genres (2 %), "rock" 10 (10 %), "zouk" none.
PRIOR = LeadingPrior.from_names(
    ["jazz a", "jazz b"] + [f"rock {i}" for i in range(10)] + [f"w{i} x" for i in range(88)]
)


def candidates(word: str, n: int) -> list[str]:
    return [f" {word} v{i}\n" for i in range(n)]


def filler(n: int) -> list[str]:
    return [f" f{i}q music\n" for i in range(n)]


def test_prior_counts_shares_and_caps() -> None:
    assert PRIOR.total == 100
    assert PRIOR.share("jazz") == pytest.approx(0.02)
    assert PRIOR.share("zouk") == 0.0
    # 1.5 x 2 % of 100 genres = 3; of 1000 = 30; an unseen word gets only the floor.
    assert PRIOR.cap("jazz", 100, ratio=1.5, floor=1) == 3
    assert PRIOR.cap("jazz", 1000, ratio=1.5, floor=1) == 30
    assert PRIOR.cap("zouk", 1000, ratio=1.5, floor=4) == 4
    assert PRIOR.cap("jazz", 20, ratio=1.5, floor=5) == 5


def test_prior_file_round_trip(tmp_path: Path) -> None:
    path = PRIOR.save(tmp_path / "leading_words.json", meta={"source": "test"})
    loaded = LeadingPrior.load(path)
    assert loaded.counts == PRIOR.counts and loaded.total == PRIOR.total
    assert json.loads(path.read_text())["source"] == "test"


@pytest.mark.parametrize(("word", "cap"), [("jazz", 3), ("rock", 15), ("zouk", 1)])
async def test_a_call_holds_each_leading_word_to_its_training_share(word: str, cap: int) -> None:
    texts = candidates(word, 40) + filler(200)
    pipeline = GenrePipeline(
        ScriptedBackend(texts),
        KNOWN,
        min_request=240,
        require_genre_word=False,
        min_leading_cap=1,
        leading_prior=PRIOR,
    )
    outcome = await pipeline.generate(100)
    assert len(outcome.genres) == 100
    assert sum(g.startswith(f"{word} ") for g in outcome.genres) == cap
    assert outcome.stats["rejected:leading_word_cap"] == 40 - cap


async def test_the_floor_lets_tiny_calls_through() -> None:
    pipeline = GenrePipeline(
        ScriptedBackend(candidates("jazz", 5)),
        KNOWN,
        min_request=5,
        require_genre_word=False,
        leading_prior=PRIOR,
    )
    assert len((await pipeline.generate(5)).genres) == 5


async def test_like_calls_are_not_capped_by_the_prior() -> None:
    pipeline = GenrePipeline(
        ScriptedBackend(candidates("jazz", 20)),
        KNOWN,
        min_request=20,
        require_genre_word=False,
        min_leading_cap=1,
        leading_prior=PRIOR,
        like_choose=1,  # one scripted round of 20: deal all of it
    )
    outcome = await pipeline.generate(20, like="jazz")
    assert len(outcome.genres) == 20


async def test_the_fingerprint_carries_the_adapters_prior(tmp_path: Path) -> None:
    KNOWN.save(tmp_path / FINGERPRINT)
    PRIOR.save(tmp_path / LEADING_WORDS)
    fingerprint = load_fingerprint(tmp_path)
    assert fingerprint is not None and fingerprint.leading is not None
    # The store's known names extend the fingerprint and keep the prior.
    merged = fingerprint.union(Fingerprint.from_names(["zydeco"]))
    assert merged.leading is not None and merged.leading.total == 100
    texts = candidates("jazz", 40) + filler(200)
    pipeline = GenrePipeline(
        ScriptedBackend(texts),
        fingerprint,
        min_request=240,
        require_genre_word=False,
        min_leading_cap=1,
        known=["zydeco"],
    )
    outcome = await pipeline.generate(100)
    assert sum(g.startswith("jazz ") for g in outcome.genres) == 3


async def test_an_adapter_without_a_prior_keeps_the_flat_cap(tmp_path: Path) -> None:
    KNOWN.save(tmp_path / FINGERPRINT)
    (tmp_path / LEADING_WORDS).write_text("not json")
    fingerprint = load_fingerprint(tmp_path)
    assert fingerprint is not None and fingerprint.leading is None
    # "rock" leads 10 % of PRIOR's genres (a cap of 15 in 100 with it); the flat cap of 5 %
    # of the call applies instead.
    pipeline = GenrePipeline(
        ScriptedBackend(candidates("rock", 40) + filler(200)),
        fingerprint,
        min_request=240,
        require_genre_word=False,
        min_leading_cap=1,
        max_leading_share=0.05,
    )
    outcome = await pipeline.generate(100)
    assert len(outcome.genres) == 100
    assert sum(g.startswith("rock ") for g in outcome.genres) == 5
    assert outcome.stats["rejected:leading_word_cap"] == 35


def test_the_dataset_ships_its_training_leading_words(tmp_path: Path) -> None:
    records = [
        {"key": name, "display_name": name, "sources": []}
        for name in [f"deep {i}" for i in range(30)] + [f"w{i} pop" for i in range(70)]
    ]
    dataset = build_dataset(records, valid_fraction=0.0, max_leading_share=0.1, min_leading_cap=1)
    write_dataset(dataset, tmp_path)
    prior = LeadingPrior.load(tmp_path / LEADING_FILE)
    # Counted over the balanced training split (deep capped at 10 % of 100 = 10), not all known.
    assert prior.counts["deep"] == 10
    assert prior.total == len(dataset.train)
