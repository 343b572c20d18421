"""The sampler's fast path on the tiny model: the restricted head and int8 linear layers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from model.base import ModelSpec
from model.fastpath import (
    HEAD_TOKENS,
    FastSettings,
    collect_head_tokens,
    head_tokens,
    write_head_tokens,
)
from model.protocol import AdapterRef, GenerationRequest
from model.sampler import Sampler
from tests.model.test_sampler import _random_lora

PLAIN = FastSettings(quantize=False, restrict_head=False)


def _logits(sampler: Sampler, prompts: list[str], fast: Any) -> Any:
    import torch

    enc = sampler.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    position_ids = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode():
        logits, _ = sampler._last_logits(
            enc["input_ids"], enc["attention_mask"], position_ids, None, fast
        )
    return logits


PROMPTS = ["genre:", "like: dub\ngenre: deep"]


def _keep(sampler: Sampler) -> list[int]:
    """Half the vocabulary, always with the end marker's tokens."""
    stop = sampler.stop_token_ids(("\n",))
    return sorted(set(range(0, len(sampler.tokenizer), 2)) | set(stop))


def test_the_restricted_head_scores_exactly_the_kept_tokens(tiny_spec: ModelSpec) -> None:
    import torch

    full = Sampler.load(tiny_spec, fast=PLAIN)
    keep = _keep(full)
    cut = Sampler(full.model, full.tokenizer, "m", device="cpu", head_tokens=keep)
    fast = cut.fast_path()
    assert fast is not None and fast.size == len(keep)
    reference = _logits(full, PROMPTS, None)
    restricted = _logits(cut, PROMPTS, fast)
    assert restricted.shape == (2, len(keep))
    torch.testing.assert_close(restricted, reference[:, keep])


def test_sampling_with_a_restricted_head_emits_only_kept_tokens(tiny_spec: ModelSpec) -> None:
    full = Sampler.load(tiny_spec, fast=PLAIN)
    keep = _keep(full)
    cut = Sampler(full.model, full.tokenizer, "m", device="cpu", head_tokens=keep)
    enc = cut.tokenizer(["genre:"] * 16, return_tensors="pt", add_special_tokens=False)
    rows = cut.decode(
        enc["input_ids"],
        enc["attention_mask"],
        max_new_tokens=8,
        temperature=1.5,
        top_p=1.0,
        stop_ids=cut.stop_token_ids(("\n",)),
    )
    emitted = {t for row in rows for t in row}
    assert emitted and emitted <= set(keep)
    # Without a restriction the same model emits tokens outside it.
    free = full.decode(
        enc["input_ids"],
        enc["attention_mask"],
        max_new_tokens=8,
        temperature=1.5,
        top_p=1.0,
        stop_ids=full.stop_token_ids(("\n",)),
    )
    assert {t for row in free for t in row} - set(keep)


def test_a_stop_token_outside_the_head_falls_back_to_the_full_head(tiny_spec: ModelSpec) -> None:
    full = Sampler.load(tiny_spec, fast=PLAIN)
    outside = set(full.stop_token_ids(("o",))) - set(full.stop_token_ids(("\n",)))
    assert outside
    keep = [i for i in _keep(full) if i not in outside]
    cut = Sampler(full.model, full.tokenizer, "m", device="cpu", head_tokens=keep)
    fast = cut.fast_path()
    assert fast is not None
    assert fast.covers(cut.stop_token_ids(("\n",)))
    assert not fast.covers(cut.stop_token_ids(("o",)))
    request = GenerationRequest(prompt="genre:", n=2, temperature=0.0, max_tokens=6, stop=("o",))
    assert cut.complete_batch([request])[0].texts == full.complete_batch([request])[0].texts


def test_int8_logits_stay_within_tolerance_of_float(tiny_spec: ModelSpec) -> None:
    full = Sampler.load(tiny_spec, fast=PLAIN)
    quantized = Sampler.load(tiny_spec, fast=FastSettings(quantize=True, restrict_head=False))
    fast = quantized.fast_path()
    assert fast is not None and fast.quantized
    reference = _logits(full, PROMPTS, None)
    approx = _logits(quantized, PROMPTS, fast)
    assert approx.shape == reference.shape
    # Probabilities within 1e-3, and the float model's weights are untouched.
    assert float((approx.softmax(-1) - reference.softmax(-1)).abs().max()) < 1e-3
    assert float((approx - reference).abs().max()) < 0.05 * float(reference.abs().max())
    same = _logits(quantized, PROMPTS, None)
    assert float((same - reference).abs().max()) == 0.0


def test_the_fast_path_serves_the_default_alone_and_returns_after_another_adapter(
    tiny_model_path: Path, tiny_spec: ModelSpec, tmp_path: Path
) -> None:
    a = _random_lora(tiny_model_path, tmp_path / "a", seed=1)
    b = _random_lora(tiny_model_path, tmp_path / "b", seed=2)
    sampler = Sampler.load(tiny_spec, a, fast=FastSettings(quantize=True, restrict_head=False))
    first = sampler.fast_path()
    assert first is not None and sampler.merged
    greedy = GenerationRequest(prompt="genre:", n=2, temperature=0.0, max_tokens=6)
    alone = sampler.complete_batch([greedy])[0].texts
    sampler.load_adapter("b", b)
    assert sampler.fast_path() is None  # unmerged: the float model serves every adapter
    on_b = GenerationRequest(
        prompt="genre:", n=2, temperature=0.0, max_tokens=6, adapter=AdapterRef("b", str(b))
    )
    assert len(sampler.complete_batch([greedy, on_b])) == 2
    sampler.unload_adapter("b")
    rebuilt = sampler.fast_path()
    assert rebuilt is not None and rebuilt is not first  # from the merged weights again
    assert sampler.complete_batch([greedy])[0].texts == alone


def test_load_reads_the_adapters_head_tokens_when_asked(
    tiny_model_path: Path, tiny_spec: ModelSpec, tmp_path: Path
) -> None:
    adapter = _random_lora(tiny_model_path, tmp_path / "a", seed=1)
    plain = Sampler.load(tiny_spec, adapter, fast=PLAIN)
    assert plain.fast_path() is None
    tokens = collect_head_tokens(plain, ["dark ambient", "k-pop"], samples=8, seed=1)
    stop = plain.stop_token_ids(("\n",))
    assert set(stop) <= set(tokens) and len(tokens) < len(plain.tokenizer)
    write_head_tokens(adapter, tokens, {"genres": 2})
    assert json.loads((adapter / HEAD_TOKENS).read_text())["count"] == len(tokens)
    assert head_tokens(adapter) == tokens

    cut = Sampler.load(tiny_spec, adapter, fast=FastSettings(quantize=False))
    fast = cut.fast_path()
    assert fast is not None and fast.size == len(tokens)
    assert Sampler.load(tiny_spec, adapter, fast=PLAIN).fast_path() is None


@pytest.mark.parametrize("content", ["not json", '{"tokens": "x"}', '{"other": []}'])
def test_a_broken_head_tokens_file_means_the_full_head(tmp_path: Path, content: str) -> None:
    (tmp_path / HEAD_TOKENS).write_text(content)
    assert head_tokens(tmp_path) is None
    assert head_tokens(tmp_path / "missing") is None
