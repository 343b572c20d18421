from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from model.base import ModelSpec
from model.errors import ModelLoadError
from model.filters import Fingerprint
from model.pipeline import GenrePipeline
from model.protocol import AdapterRef, GenerationRequest
from model.sampler import LocalBackend, Sampler


@pytest.fixture(scope="module")
def sampler(tiny_spec: ModelSpec) -> Sampler:
    return Sampler.load(tiny_spec)


def _count_decode_calls(sampler: Sampler, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    original = sampler.decode

    def counting(input_ids: Any, *args: Any, **kwargs: Any) -> Any:
        rows = kwargs.get("rows")  # the rows of the batch (input_ids: its distinct prompts)
        calls.append(int(input_ids.shape[0] if rows is None else rows.shape[0]))
        return original(input_ids, *args, **kwargs)

    monkeypatch.setattr(sampler, "decode", counting)
    return calls


def test_requests_sharing_a_key_share_one_batch(
    sampler: Sampler, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _count_decode_calls(sampler, monkeypatch)
    requests = [
        GenerationRequest(prompt="genre:", n=3, max_tokens=5, stop=("\n",), seed=1),
        GenerationRequest(prompt="like: dub\ngenre:", n=2, max_tokens=5, stop=("\n",)),
        GenerationRequest(prompt="genre:", n=4, temperature=0.5, max_tokens=5, stop=("\n",)),
    ]
    results = sampler.complete_batch(requests)
    assert [len(r.texts) for r in results] == [3, 2, 4]
    assert calls == [5, 4]  # two sampling keys -> two decoding passes
    assert all(r.model == "model" for r in results)
    assert all(len(r.finished) == len(r.texts) for r in results)
    assert all(r.completion_tokens <= 5 * len(r.texts) for r in results)


def test_the_rows_of_a_prompt_share_one_prefill(
    sampler: Sampler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prompt is run through the model once per batch, not once per row: a `like:` prompt
    is longer than the genre it asks for, so its prefill was most of a variation's cost."""
    shapes: list[tuple[int, int]] = []
    decoder = sampler.model.get_decoder()
    original = decoder.forward

    def recording(*args: Any, **kwargs: Any) -> Any:
        shapes.append(tuple(kwargs["input_ids"].shape))
        return original(*args, **kwargs)

    monkeypatch.setattr(decoder, "forward", recording)
    greedy = {"temperature": 0.0, "max_tokens": 4, "stop": ("\n",)}
    requests = [
        GenerationRequest(prompt="like: midwest shoegaze\ngenre:", n=6, **greedy),  # type: ignore[arg-type]
        GenerationRequest(prompt="genre:", n=4, **greedy),  # type: ignore[arg-type]
    ]
    results = sampler.complete_batch(requests)
    assert [len(r.texts) for r in results] == [6, 4]
    assert shapes[0][0] == 2, shapes  # the prefill: one row per distinct prompt
    assert shapes[1] == (10, 1), shapes  # then every row decodes its own token
    # Greedy rows of one prompt are the prompt's greedy text, as if it were alone.
    for request, result in zip(requests, results, strict=True):
        (alone,) = sampler.complete_batch([replace(request, n=1)])
        assert result.texts == alone.texts * request.n
        assert result.scores == pytest.approx(alone.scores * request.n, abs=1e-4)
    # Without sharing (the benchmarks' "old"), every row runs its prompt: the same texts.
    shapes.clear()
    monkeypatch.setattr(sampler, "share_prefill", False)
    assert [r.texts for r in sampler.complete_batch(requests)] == [r.texts for r in results]
    assert shapes[0][0] == 10, shapes


def test_the_first_pick_ranks_each_prompts_logits_once(
    sampler: Sampler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rows of a prompt share its first logits, so the first step's top-k (a partial sort
    of the vocabulary for every row, the costliest part of picking a token) runs once per
    prompt; sampled rows still differ, and the same seed gives the same texts and scores."""
    import torch

    rows_ranked: list[int] = []
    original = torch.topk

    def recording(values: Any, *args: Any, **kwargs: Any) -> Any:
        rows_ranked.append(int(values.shape[0]))
        return original(values, *args, **kwargs)

    requests = [
        GenerationRequest(prompt="like: midwest shoegaze\ngenre:", n=12, temperature=1.0, seed=4),
        GenerationRequest(prompt="genre:", n=20, temperature=1.0, seed=4),
    ]
    monkeypatch.setattr(sampler, "share_prefill", False)
    unshared = sampler.complete_batch(requests)
    monkeypatch.setattr(sampler, "share_prefill", True)
    monkeypatch.setattr(torch, "topk", recording)
    shared = sampler.complete_batch(requests)
    assert rows_ranked[0] == 2, rows_ranked  # one batch of 32 rows: one row per prompt
    assert [r.texts for r in shared] == [r.texts for r in unshared]
    assert [r.scores for r in shared] == [r.scores for r in unshared]
    assert len(set(shared[1].texts)) > 1  # the rows sample apart after the shared ranking


def test_left_padding_gives_the_same_greedy_text_alone_or_batched(sampler: Sampler) -> None:
    short = GenerationRequest(prompt="genre:", n=1, temperature=0.0, max_tokens=6)
    long = GenerationRequest(
        prompt="like: midwest shoegaze\ngenre:", n=1, temperature=0.0, max_tokens=6
    )
    alone_short = sampler.complete_batch([short])[0].texts
    alone_long = sampler.complete_batch([long])[0].texts
    together = sampler.complete_batch([short, long])
    assert together[0].texts == alone_short
    assert together[1].texts == alone_long


def test_greedy_decode_matches_transformers_generate(sampler: Sampler) -> None:
    import torch

    prompts = ["genre:", "like: midwest shoegaze\ngenre:", "like: dub\ngenre:"]
    enc = sampler.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    # Stop on a few frequent tokens so that rows finish at different steps and get dropped.
    stop_ids = [int(t) for t in torch.arange(0, 60)]
    ours = sampler.decode(
        enc["input_ids"],
        enc["attention_mask"],
        max_new_tokens=8,
        temperature=0.0,
        top_p=1.0,
        stop_ids=stop_ids,
    )
    with torch.inference_mode():
        ref = sampler.model.generate(
            **enc,
            max_new_tokens=8,
            do_sample=False,
            eos_token_id=stop_ids,
            pad_token_id=sampler.tokenizer.pad_token_id,
        )
    width = enc["input_ids"].shape[1]
    for row, tokens in enumerate(ours):
        expected = []
        for token in ref[row, width:].tolist():
            expected.append(token)
            if token in stop_ids:
                break
        assert tokens == expected


def test_top_p_keeps_only_the_nucleus() -> None:
    import torch

    from model.sampler import _pick

    logits = torch.tensor([[10.0, 9.0, -10.0, -10.0]] * 200)
    picked = _pick(logits, temperature=1.0, top_p=0.5)
    assert set(picked.tolist()) == {0}
    picked = _pick(logits, temperature=1.0, top_p=0.99)
    assert set(picked.tolist()) == {0, 1}
    assert _pick(logits[:1], temperature=0.0, top_p=1.0).tolist() == [0]


def test_seeded_sampling_is_reproducible(sampler: Sampler) -> None:
    request = GenerationRequest(prompt="genre:", n=6, max_tokens=6, seed=7)
    assert sampler.complete_batch([request])[0].texts == sampler.complete_batch([request])[0].texts


def test_chunks_large_requests(sampler: Sampler, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_decode_calls(sampler, monkeypatch)
    monkeypatch.setattr(sampler, "max_batch", 4)
    (result,) = sampler.complete_batch([GenerationRequest(prompt="genre:", n=10, max_tokens=3)])
    assert len(result.texts) == 10 and calls == [4, 4, 2]


def test_stop_tokens_include_every_token_with_the_stop_string(sampler: Sampler) -> None:
    ids = sampler.stop_token_ids(("\n",))
    assert sampler.tokenizer.eos_token_id in ids
    assert all(
        "\n" in sampler.tokenizer.decode([i]) for i in ids if i != sampler.tokenizer.eos_token_id
    )
    assert any("\n" in sampler.tokenizer.decode([i]) for i in ids)


def test_stop_string_is_cut_and_marks_finished(
    sampler: Sampler, monkeypatch: pytest.MonkeyPatch
) -> None:

    newline = sampler.tokenizer("\n", add_special_tokens=False)["input_ids"][0]
    word = sampler.tokenizer(" rock", add_special_tokens=False)["input_ids"]

    def scripted(input_ids: Any, *args: Any, logprobs: Any = None, **kwargs: Any) -> Any:
        rows = [[*word, newline], [*word, *word, *word]][: kwargs["rows"].shape[0]]
        if logprobs is not None:  # decode's contract: one log-prob per sampled token
            logprobs[:] = [[-1.0] * len(row) for row in rows]
        return rows

    monkeypatch.setattr(sampler, "decode", scripted)
    (result,) = sampler.complete_batch(
        [GenerationRequest(prompt="genre:", n=2, max_tokens=3 * len(word) + 1, stop=("\n",))]
    )
    assert result.texts[0] == " rock"
    assert list(result.finished) == [True, False]


async def test_local_backend_runs_in_a_thread_and_feeds_the_pipeline(sampler: Sampler) -> None:
    backend = LocalBackend(sampler)
    result = await backend.complete(GenerationRequest(prompt="genre:", n=2, max_tokens=4))
    assert len(result.texts) == 2 and result.generate_s >= 0
    pipeline = GenrePipeline(backend, Fingerprint(), max_attempts=1, min_request=2)
    # A random tiny model rarely finishes a genre: the pipeline reports why it could not.
    try:
        outcome = await pipeline.generate(1)
    except Exception as exc:  # GenerationError
        assert "acceptable genres" in str(exc)
    else:
        assert len(outcome.genres) == 1


def test_missing_adapter_is_a_load_error(tiny_spec: ModelSpec, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not a LoRA adapter"):
        Sampler.load(tiny_spec, tmp_path)


def test_trained_adapter_loads_as_the_default(
    tiny_model_path: Path, tiny_spec: ModelSpec, tiny_dataset: Path, tmp_path: Path
) -> None:
    from model.train.sft import TrainConfig, train

    out = tmp_path / "adapter"
    cfg = TrainConfig(
        base_model=str(tiny_model_path), epochs=1, batch_size=4, dtype="float32", threads=1
    )
    train(tiny_dataset, out, cfg, name="tiny-lora")
    loaded = Sampler.load(tiny_spec, out)
    assert loaded.name == "model+tiny-lora"
    assert loaded.adapters == ["default"]  # unmerged: other adapters can join it
    (result,) = loaded.complete_batch([GenerationRequest(prompt="genre:", n=2, max_tokens=4)])
    assert len(result.texts) == 2


def _random_lora(base: Path, out: Path, seed: int) -> Path:
    """A LoRA adapter for the tiny model with random (non-zero) A and B weights."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(base))
    config = LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj", "o_proj"])
    config.init_lora_weights = False  # random B too, so the adapter changes the output
    get_peft_model(model, config).save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def two_adapters(
    tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[AdapterRef, AdapterRef]:
    root = tmp_path_factory.mktemp("adapters")
    return (
        AdapterRef("a", str(_random_lora(tiny_model_path, root / "a", seed=1))),
        AdapterRef("b", str(_random_lora(tiny_model_path, root / "b", seed=2))),
    )


def _greedy(ref: AdapterRef | None, prompt: str) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, n=2, temperature=0.0, max_tokens=6, adapter=ref)


@pytest.mark.parametrize("mix", [True, False])
def test_mixed_adapter_batch_matches_single_adapter_batches(
    tiny_spec: ModelSpec, two_adapters: tuple[AdapterRef, AdapterRef], mix: bool
) -> None:
    a, b = two_adapters
    sampler = Sampler.load(tiny_spec)
    sampler.load_adapter(a.name, a.path)
    sampler.load_adapter(b.name, b.path)
    sampler.mix_adapters = mix
    requests = [_greedy(ref, p) for ref in (None, a, b) for p in ("genre:", "like: dub\ngenre:")]
    alone = [sampler.complete_batch([r])[0].texts for r in requests]
    together = [result.texts for result in sampler.complete_batch(requests)]
    assert together == alone
    by_adapter = {
        ref: [t for r, t in zip(requests, alone, strict=True) if r.adapter == ref]
        for ref in (None, a, b)
    }
    assert len({tuple(texts) for texts in by_adapter.values()}) == 3  # the adapters differ


def test_unloaded_adapter_frees_its_name(
    tiny_spec: ModelSpec, two_adapters: tuple[AdapterRef, AdapterRef]
) -> None:
    a, b = two_adapters
    sampler = Sampler.load(tiny_spec, a.path)
    sampler.load_adapter(b.name, b.path)
    assert sampler.adapters == ["default", "b"]
    sampler.unload_adapter("b")
    assert sampler.adapters == ["default"]
    (result,) = sampler.complete_batch([_greedy(None, "genre:")])
    assert len(result.texts) == 2


def _load(spec: ModelSpec, adapter: str | None, *, merge: bool = True) -> Sampler:
    sampler = Sampler.load(spec)
    sampler.merge_default = merge
    if adapter is not None:
        sampler.load_adapter("default", adapter)
    return sampler


def _texts(sampler: Sampler, requests: list[GenerationRequest]) -> list[tuple[str, ...]]:
    return [result.texts for result in sampler.complete_batch(requests)]


def test_the_default_adapter_is_merged_only_while_it_is_alone(
    tiny_spec: ModelSpec, two_adapters: tuple[AdapterRef, AdapterRef]
) -> None:
    a, b = two_adapters
    prompts = ("genre:", "like: dub\ngenre:")
    defaults = [_greedy(None, p) for p in prompts]
    reference = _texts(_load(tiny_spec, a.path, merge=False), defaults)
    sampler = _load(tiny_spec, a.path)
    assert sampler.merged
    assert _texts(sampler, defaults) == reference

    sampler.load_adapter(b.name, b.path)  # a second adapter: the default is unmerged
    assert not sampler.merged
    with_b = [_greedy(b, p) for p in prompts]
    b_alone = _texts(sampler, with_b)
    assert _texts(sampler, defaults) == reference
    assert _texts(sampler, defaults + with_b) == reference + b_alone  # a mixed batch
    assert b_alone != reference

    sampler.unload_adapter(b.name)  # alone again: merged again, same outputs
    assert sampler.merged
    assert _texts(sampler, defaults) == reference


def test_a_sampler_without_a_default_never_merges(
    tiny_spec: ModelSpec, two_adapters: tuple[AdapterRef, AdapterRef]
) -> None:
    a, _ = two_adapters
    sampler = _load(tiny_spec, None)
    base = _texts(sampler, [_greedy(None, "genre:")])
    sampler.load_adapter(a.name, a.path)  # requests without an adapter still use the base
    assert not sampler.merged
    assert _texts(sampler, [_greedy(None, "genre:")]) == base
    assert _texts(sampler, [_greedy(a, "genre:")]) != base


def test_unloading_the_merged_default_restores_the_base(
    tiny_spec: ModelSpec, two_adapters: tuple[AdapterRef, AdapterRef]
) -> None:
    a, _ = two_adapters
    base = _texts(_load(tiny_spec, None), [_greedy(None, "genre:")])
    sampler = _load(tiny_spec, a.path)
    assert sampler.merged
    sampler.unload_adapter("default")
    assert not sampler.merged and sampler.adapters == []
    assert _texts(sampler, [_greedy(None, "genre:")]) == base


def _finished_names(result: Any) -> list[str]:
    from model.textformat import parse_completion

    names = [
        parse_completion(text, require_end=False)
        for text, done in zip(result.texts, result.finished, strict=True)
        if done
    ]
    return [n for n in names if n]


def test_a_row_that_spells_a_known_genre_may_not_end_there(sampler: Sampler) -> None:
    """``avoid_known``: the stop tokens are masked while a row's text is a known genre, so
    the row goes on (or runs out of tokens) instead of ending on a name the filter drops."""
    request = GenerationRequest(
        prompt="genre:", n=200, temperature=1.0, max_tokens=6, stop=("\n",), seed=5
    )
    plain = _finished_names(sampler.complete_batch([request])[0])
    # The random tiny model ends some rows; call what they spelled "known".
    known = Fingerprint.from_names(plain)
    assert sum(name in known for name in plain) >= 5  # a few have no genre key at all
    sampler.avoid(sampler.adapter_of(request), known)
    try:
        blocked = sampler.complete_batch([replace(request, avoid_known=True)])[0]
        again = sampler.complete_batch([request])[0]
    finally:
        sampler.avoid(sampler.adapter_of(request), None)
    assert [n for n in _finished_names(blocked) if n in known] == []
    assert _finished_names(again) == plain  # without the flag nothing changes
    # Scores stay the model's own log-probabilities, not the masked distribution's.
    assert all(s <= 0 for s in blocked.scores)


def test_an_adapters_fingerprint_is_what_its_rows_avoid(
    tiny_spec: ModelSpec, tiny_model_path: Path, tmp_path: Path
) -> None:
    adapter = _random_lora(tiny_model_path, tmp_path / "a", seed=3)
    Fingerprint.from_names(["dream pop"]).save(adapter / "known_genres.fingerprint")
    loaded = Sampler.load(tiny_spec, adapter)
    known = loaded.known_of(loaded.adapter_of(GenerationRequest(prompt="genre:")))
    assert known is not None and "dream pop" in known and "post rock" not in known
    bare = _random_lora(tiny_model_path, tmp_path / "b", seed=4)
    loaded.load_adapter("other", bare)
    assert loaded.known_of("other") is None
    loaded.unload_adapter("default")
    assert loaded.known_of("default") is None
