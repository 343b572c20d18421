"""`microgenre eval --seeds --levels --json-out --plot`: the real command, a scripted sampler."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Any

import pytest

import bot.cli.evaluate as cli_evaluate
from bot.cli import entry
from model.events import EvalResult
from model.protocol import GenerationRequest, GenerationResult

WORDS = ["velvet", "harbour", "glacier", "copper", "neon", "moss", "tidal", "amber"]
HEADS = ["polka", "drone", "dub", "gaze", "trap", "waltz", "grime", "chant", "jazz", "rock"]
GENRES = [f"{a} {b}" for a in WORDS for b in HEADS]


class GenreSampler:
    """Completions drawn from the real genre list and from made-up ones; the real ones score
    higher (as a model that learned what genres look like would score them)."""

    name = "genre-sampler"

    def __init__(self) -> None:
        self._rng = random.Random(0)

    def draw(self) -> tuple[str, float]:
        """One completion and its score."""
        if self._rng.random() < 0.5:
            return f" {self._rng.choice(GENRES)}", -1.0 - self._rng.random()
        return (
            f" {self._rng.choice(WORDS)}{self._rng.randrange(500)} dub",
            -2.5 - self._rng.random(),
        )

    def complete_batch(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        results = []
        for request in requests:
            texts, scores = zip(*(self.draw() for _ in range(request.n)), strict=True)
            results.append(
                GenerationResult(
                    tuple(texts),
                    self.name,
                    finished=tuple([True] * request.n),
                    scores=tuple(scores),
                )
            )
        return results


@pytest.fixture
def genres_csv(tmp_path: Path) -> Path:
    path = tmp_path / "genres.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["genre", "source", "parent"])
        writer.writerows([g, "everynoise", ""] for g in GENRES)
    return path


def test_eval_reports_the_held_out_levels_and_writes_json_and_png(
    genres_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli_evaluate, "load_sampler", lambda config, adapter: GenreSampler())
    report, png = tmp_path / "report.json", tmp_path / "docs" / "weirdness.png"
    code = entry(
        ["eval", "-n", "20", "--from-csv", str(genres_csv), "--seeds", "1,2", "--levels", "0,1,5",
         "--likes", "0", "--json-out", str(report), "--plot", str(png)]
    )  # fmt: skip
    assert code == 0
    result = EvalResult.from_json(report.read_text())
    assert result.fair is not None and result.fair["seeds"] == [1, 2]
    levels = result.fair["summary"]["levels"]
    assert set(levels) == {"None", "1", "5"}
    # Real genres score higher here: the most plausible band re-invents more of them.
    assert levels["1"]["reinvented"]["mean"] > levels["5"]["reinvented"]["mean"]
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_eval_refuses_a_level_outside_0_to_5(
    genres_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli_evaluate, "load_sampler", lambda config, adapter: GenreSampler())
    assert entry(["eval", "--from-csv", str(genres_csv), "--levels", "1,7"]) != 0


def test_the_gate_command_skips_the_held_out_evaluation(
    genres_csv: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli_evaluate, "load_sampler", lambda config, adapter: GenreSampler())
    args = ["eval", "--no-baseline", "--likes", "0", "-n", "20", "--json"]
    assert entry([*args, "--from-csv", str(genres_csv)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert "fair" not in data and EvalResult.from_dict(data).well_formed > 0


class StingySampler(GenreSampler):
    """Mostly real (training) genres: about one candidate in six is acceptable, so a level
    that chooses from three times its need samples far more than 10 per genre asked."""

    def draw(self) -> tuple[str, float]:
        if self._rng.random() < 0.85:
            return f" {self._rng.choice(GENRES)}", -self._rng.random()
        return f" {self._rng.choice(WORDS)}{self._rng.randrange(10**6)} dub", -self._rng.random()


def test_weirdness_levels_are_not_cut_short_by_the_weak_model_cap(
    genres_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli_evaluate, "load_sampler", lambda config, adapter: StingySampler())
    report = tmp_path / "report.json"
    code = entry(
        ["eval", "-n", "40", "--from-csv", str(genres_csv), "--seeds", "1", "--levels", "0,1,5",
         "--likes", "0", "--json-out", str(report)]
    )  # fmt: skip
    assert code == 0
    result = EvalResult.from_json(report.read_text())
    assert result.fair is not None
    points = result.fair["model"]
    assert [p["n"] for p in points] == [40, 40, 40], [p["shortfall"] for p in points]
    assert max(p["raw"] for p in points) > 10 * 40  # the levels needed more than 10 per genre


class AvoidingSampler(GenreSampler):
    """Records the known genres each ``avoid_known`` request was sampled to avoid."""

    def __init__(self) -> None:
        super().__init__()
        self.known: Any = None
        self.seen: list[Any] = []

    def adapter_of_default(self) -> str:
        return "default"

    def avoid(self, name: str, known: Any) -> None:
        assert name == "default"
        self.known = known

    def complete_batch(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        self.seen.extend(self.known for r in requests if r.avoid_known)
        return super().complete_batch(requests)


def test_the_held_out_evaluation_lets_the_sampler_end_on_held_out_genres(
    genres_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shipped fingerprint knows every genre, held-out ones too: a sampler avoiding it
    could never re-invent one. The held-out part avoids only the split's training genres."""
    monkeypatch.setenv("MICROGENRE_MODEL_AVOID_KNOWN", "true")
    sampler = AvoidingSampler()
    monkeypatch.setattr(cli_evaluate, "load_sampler", lambda config, adapter: sampler)
    code = entry(
        ["eval", "-n", "20", "--from-csv", str(genres_csv), "--seeds", "1", "--levels", "0",
         "--likes", "0", "--blends", "0", "--no-like-probes"]
    )  # fmt: skip
    assert code == 0
    assert sampler.seen and sampler.seen[-1] is not None
    avoided = sampler.seen[-1]
    held_out = [g for g in GENRES if g not in avoided]
    assert held_out and len(held_out) < len(GENRES)
