"""The sampler survives what a bad request could bring into a batch, and its caches are bounded."""

from __future__ import annotations

import pytest

from model import sampler as sampler_module
from model.base import ModelSpec
from model.protocol import GenerationRequest
from model.sampler import Sampler


@pytest.fixture(scope="module")
def sampler(tiny_spec: ModelSpec) -> Sampler:
    return Sampler.load(tiny_spec)


def test_an_empty_prompt_alone_is_completed(sampler: Sampler) -> None:
    (result,) = sampler.complete_batch([GenerationRequest(prompt="", n=2, max_tokens=4)])
    assert len(result.texts) == 2
    assert result.prompt_tokens > 0  # conditioned on the tokenizer's start/end token


def test_an_empty_prompt_does_not_disturb_its_batch(sampler: Sampler) -> None:
    other = GenerationRequest(prompt="like: dub\ngenre:", n=1, temperature=0.0, max_tokens=6)
    empty = GenerationRequest(prompt="", n=1, temperature=0.0, max_tokens=6)
    alone = sampler.complete_batch([other])[0].texts
    together = sampler.complete_batch([empty, other, empty])
    assert together[1].texts == alone
    assert [len(r.texts) for r in together] == [1, 1, 1]


@pytest.mark.parametrize("seed", [-1, 2**64, 2**70])
def test_a_seed_out_of_torch_range_does_not_fail_the_batch(sampler: Sampler, seed: int) -> None:
    request = GenerationRequest(prompt="genre:", n=2, max_tokens=3, seed=seed)
    first = sampler.complete_batch([request])[0].texts
    assert len(first) == 2
    assert sampler.complete_batch([request])[0].texts == first  # still reproducible


def test_the_stop_cache_is_bounded_lru(sampler: Sampler, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sampler_module, "STOP_CACHE_SIZE", 8)
    newline = sampler.stop_token_ids(("\n",))
    for i in range(40):
        sampler.stop_token_ids((f"stop{i}",))
        sampler.stop_token_ids(("\n",))  # recently used: stays
        assert sampler.stop_cache_size <= 8
    assert sampler.stop_cache_size == 8
    assert sampler.stop_token_ids(("\n",)) == newline
    assert sampler.stop_token_ids(("stop0",)) == sampler.stop_token_ids(("stop0", "stop0"))
