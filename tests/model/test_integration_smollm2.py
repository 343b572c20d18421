"""The real SmolLM2 with the shipped adapter (slow: run with `-m integration`)."""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path

import pytest

from model.filters import Fingerprint, Moderator, validate
from scraping.normalize import genre_key

REPO = Path(__file__).resolve().parents[2]
ADAPTER = REPO / "model" / "default_adapter"
SHARED_CSV = REPO.parent / "shared" / "data" / "genres.csv"

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pipeline() -> object:
    if not (ADAPTER / "adapter_config.json").is_file():
        pytest.skip("the shipped adapter is missing")
    from model.base import ModelSpec
    from model.pipeline import GenrePipeline
    from model.sampler import LocalBackend, Sampler

    # The converted base model is cached in the repository's (git-ignored) data folder.
    sampler = Sampler.load(ModelSpec(), ADAPTER, data_dir=REPO / "data")
    fingerprint = Fingerprint.load(ADAPTER / "known_genres.fingerprint")
    return GenrePipeline(LocalBackend(sampler), fingerprint, Moderator())


def test_twenty_valid_novel_distinct_genres(pipeline: object) -> None:
    from model.pipeline import GenrePipeline

    assert isinstance(pipeline, GenrePipeline)
    outcome = asyncio.run(pipeline.generate(20, seed=123))
    genres = outcome.genres
    assert len(genres) == 20
    assert len({genre_key(g) for g in genres}) == 20
    assert all(validate(g) is None for g in genres)
    assert all(pipeline.fingerprint.match(g) is None for g in genres)
    if SHARED_CSV.is_file():
        with SHARED_CSV.open(encoding="utf-8", newline="") as fh:
            real = {genre_key(row["genre"]) for row in csv.DictReader(fh)}
        assert not [g for g in genres if genre_key(g) in real]
    # Most raw candidates survive: the model wastes little.
    assert outcome.stats["raw"] < 3 * 20 + 40


def test_like_condition_steers(pipeline: object) -> None:
    from model.pipeline import GenrePipeline

    assert isinstance(pipeline, GenrePipeline)
    outcome = asyncio.run(pipeline.generate(10, like="jazz", seed=5))
    assert sum("jazz" in g for g in outcome.genres) >= 3
