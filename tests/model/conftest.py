"""Fixtures of the model tests: a tiny locally-built causal LM and a small dataset."""

from __future__ import annotations

from pathlib import Path

import pytest

from model.base import ModelSpec
from model.dataset import build_dataset, write_dataset

GENRES = [
    "post rock",
    "dream pop",
    "midwest shoegaze",
    "dark ambient",
    "drum and bass",
    "k-pop",
    "lo-fi hip hop",
    "detroit techno",
    "musica popular brasileira",
    "zydeco",
    "acid jazz",
    "nu metal",
    "vaporwave",
    "chillwave",
    "hyperpop",
    "glitch hop",
]


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from model.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny_spec(tiny_model_path: Path) -> ModelSpec:
    """The tiny model on the CPU, in float32, on one thread."""
    return ModelSpec(str(tiny_model_path), device="cpu", dtype="float32", threads=1)


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    records = [
        {"key": g, "display_name": g, "sources": [{"extra": {"parents": ["rock"]}}]} for g in GENRES
    ]
    return write_dataset(build_dataset(records, valid_fraction=0.2, seed=3), tmp_path / "ds")
