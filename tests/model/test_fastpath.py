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


def _step_logits(sampler: Sampler, fast: Any) -> Any:
    """Logits of one decoding step after the prompts, each step on ``fast`` (or the float model)."""
    import torch

    enc = sampler.tokenizer(PROMPTS, return_tensors="pt", padding=True, add_special_tokens=False)
    mask = enc["attention_mask"]
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode():
        logits, cache = sampler._last_logits(enc["input_ids"], mask, position_ids, None, fast)
        chosen = logits.argmax(-1)
        if fast is not None:
            chosen = fast.to_vocab(chosen)
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        step, _ = sampler._last_logits(chosen[:, None], mask, position_ids[:, -1:] + 1, cache, fast)
    return logits, step


def test_int8_runs_the_prompt_in_float_and_the_steps_within_tolerance(
    tiny_spec: ModelSpec,
) -> None:
    full = Sampler.load(tiny_spec, fast=PLAIN)
    quantized = Sampler.load(tiny_spec, fast=FastSettings(quantize=True, restrict_head=False))
    fast = quantized.fast_path()
    assert fast is not None and fast.quantized
    reference_prompt, reference_step = _step_logits(full, None)
    prompt, step = _step_logits(quantized, fast)
    # The prompt (prefilled once per distinct prompt) runs on the float weights: exact.
    assert float((prompt - reference_prompt).abs().max()) == 0.0
    # The decoding steps run in int8: probabilities within 1e-3 of the float model's.
    assert step.shape == reference_step.shape
    assert float((step.softmax(-1) - reference_step.softmax(-1)).abs().max()) < 1e-3
    assert float((step - reference_step).abs().max()) < 0.05 * float(reference_step.abs().max())
    # The float model's weights are untouched.
    _, same = _step_logits(quantized, None)
    assert float((same - reference_step).abs().max()) == 0.0


def test_int8_scales_each_token_on_its_own() -> None:
    """One row with activations 1,000 times larger does not coarsen the others' products."""
    import torch

    from model.int8 import Int8Linear

    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 32)
    x = torch.randn(8, 64)
    x[0] *= 1000.0
    exact = linear(x).detach()
    error = (Int8Linear(linear)(x) - exact).norm(dim=1) / exact.norm(dim=1)
    assert float(error.max()) < 0.02
    # One scale for the whole tensor (torch's dynamic quantisation) loses the other rows.
    per_tensor = torch.ao.quantization.quantize_dynamic(
        torch.nn.Sequential(linear), {torch.nn.Linear}, dtype=torch.qint8
    )
    coarse = (per_tensor(x) - exact).norm(dim=1) / exact.norm(dim=1)
    assert float(coarse[1:].min()) > 0.2


def test_int8_keeps_a_batch_of_one_and_the_input_dtype() -> None:
    import torch

    from model.int8 import Int8Linear, quantise_linears

    torch.manual_seed(1)
    block = torch.nn.Sequential(torch.nn.Linear(16, 24), torch.nn.ReLU(), torch.nn.Linear(24, 8))
    x = torch.randn(1, 1, 16, dtype=torch.bfloat16)
    exact = block.to(torch.bfloat16)(x)
    quantise_linears(block)
    assert [type(m) for m in block] == [Int8Linear, torch.nn.ReLU, Int8Linear]
    out = block(x)
    assert out.shape == (1, 1, 8) and out.dtype == torch.bfloat16
    assert float((out.float() - exact.float()).norm() / exact.float().norm()) < 0.05


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
