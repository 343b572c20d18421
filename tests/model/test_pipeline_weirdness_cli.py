"""`microgenre generate --weirdness N`: the plausibility band behind the real CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

import bot.cli.generate as cli_generate
from bot.cli import entry
from model.protocol import GenerationRequest, GenerationResult

# The module (bot.cli exports a click group of the same name).


class ScoredSampler:
    """Stands in for model.sampler.Sampler: candidate i is ``w<i> jazz``, scored ``-i / 1000``
    modulo a cycle, so a lower number reads as more plausible."""

    name = "scored"

    def __init__(self) -> None:
        self.index = 0
        self.requests: list[GenerationRequest] = []

    def complete_batch(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        results = []
        for request in requests:
            self.requests.append(request)
            numbers = [(self.index + i) * 7919 % 1000 for i in range(request.n)]
            self.index += request.n
            results.append(
                GenerationResult(
                    tuple(f" w{k} jazz" for k in numbers),
                    self.name,
                    finished=tuple([True] * request.n),
                    scores=tuple(-k / 1000 for k in numbers),
                )
            )
        return results


def _generate(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> list[int]:
    monkeypatch.setattr(cli_generate, "load_sampler", lambda config, adapter: ScoredSampler())
    assert entry(["generate", "-n", "10", "--no-record", "--seed", "1", *args]) == 0
    return [int(line.split()[0][1:]) for line in capsys.readouterr().out.splitlines()]


def test_weirdness_1_prints_more_plausible_genres_than_5(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("MICROGENRE_DATABASE_URL", "")
    monkeypatch.chdir(tmp_path)
    tame = _generate(monkeypatch, capsys, "--weirdness", "1")
    wild = _generate(monkeypatch, capsys, "--weirdness", "5")
    assert len(tame) == len(wild) == 10
    assert max(tame) < min(wild)


def test_weirdness_outside_1_to_5_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli_generate, "load_sampler", lambda config, adapter: ScoredSampler())
    assert entry(["generate", "-n", "3", "--weirdness", "6"]) == 2


@pytest.mark.parametrize("setting", ["true", "false"])
def test_generate_asks_to_avoid_known_genres_as_the_config_says(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    setting: str,
) -> None:
    monkeypatch.setenv("MICROGENRE_DATABASE_URL", "")
    monkeypatch.setenv("MICROGENRE_MODEL_AVOID_KNOWN", setting)
    monkeypatch.chdir(tmp_path)
    sampler = ScoredSampler()
    monkeypatch.setattr(cli_generate, "load_sampler", lambda config, adapter: sampler)
    assert entry(["generate", "-n", "3", "--no-record", "--seed", "1"]) == 0
    assert sampler.requests and {r.avoid_known for r in sampler.requests} == {setting == "true"}
