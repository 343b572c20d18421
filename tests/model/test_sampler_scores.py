"""The sampler's plausibility scores: read off the decoding loop's own logits."""

from __future__ import annotations

import pytest

from model.base import ModelSpec
from model.protocol import GenerationRequest
from model.sampler import Sampler, mean_logprob


@pytest.fixture(scope="module")
def sampler(tiny_spec: ModelSpec) -> Sampler:
    return Sampler.load(tiny_spec)


def _teacher_forced(sampler: Sampler, prompt: str, tokens: list[int]) -> list[float]:
    """Log-probabilities of ``tokens`` after ``prompt`` from one full forward pass."""
    import torch

    ids = sampler.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    full = torch.cat([ids, torch.tensor([tokens])], dim=1)
    with torch.inference_mode():
        logits = sampler.model(full).logits[0].float()
    lps = torch.log_softmax(logits, dim=-1)
    start = ids.shape[1]
    return [float(lps[start - 1 + i, tok]) for i, tok in enumerate(tokens)]


@pytest.mark.parametrize("temperature", [0.5, 1.5])
def test_token_logprobs_are_the_untempered_model_logprobs(
    sampler: Sampler, temperature: float
) -> None:
    prompts = ["genre:", "like: midwest shoegaze\ngenre:"]
    enc = sampler.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    logprobs: list[list[float]] = []
    tokens = sampler.decode(
        enc["input_ids"],
        enc["attention_mask"],
        max_new_tokens=6,
        temperature=temperature,
        top_p=0.9,
        stop_ids=list(range(0, 40)),  # rows finish at different steps
        logprobs=logprobs,
    )
    assert [len(lp) for lp in logprobs] == [len(t) for t in tokens]
    for prompt, row_tokens, row_lps in zip(prompts, tokens, logprobs, strict=True):
        assert row_lps == pytest.approx(_teacher_forced(sampler, prompt, row_tokens), abs=1e-4)


def test_results_carry_one_score_per_text(sampler: Sampler) -> None:
    request = GenerationRequest(prompt="genre:", n=5, max_tokens=4, stop=("\n",), seed=3)
    (result,) = sampler.complete_batch([request])
    assert len(result.scores) == len(result.texts) == 5
    assert all(score <= 0.0 for score in result.scores)
    again = sampler.complete_batch([request])[0]
    assert again.texts == result.texts and again.scores == pytest.approx(result.scores)


def test_mean_logprob_is_length_normalised() -> None:
    assert mean_logprob([-2.0] * 2) == mean_logprob([-2.0] * 6) == -2.0
