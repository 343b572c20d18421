from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from model.artifacts import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    FINGERPRINT,
    LEADING_WORDS,
    LOSS_CURVE,
    MODEL_CARD,
)
from model.errors import DatasetError
from model.events import EventKind, StopReason, TrainEvent
from model.train.sft import TrainConfig, train


def _config(model: Path, **kw: Any) -> TrainConfig:
    values: dict[str, Any] = {
        "base_model": str(model),
        "epochs": 2,
        "batch_size": 4,
        "dtype": "float32",
        "device": "cpu",
        "learning_rate": 5e-3,
        "warmup_steps": 1,
        "threads": 1,
        **kw,
    }
    return TrainConfig(**values)


def _weights(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(path))


def test_training_writes_a_complete_adapter(
    tiny_model_path: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    events: list[TrainEvent] = []
    out = tmp_path / "adapter"
    result = train(tiny_dataset, out, _config(tiny_model_path), progress=events.append)
    for name in (
        ADAPTER_WEIGHTS,
        ADAPTER_CONFIG,
        MODEL_CARD,
        FINGERPRINT,
        LEADING_WORDS,
        LOSS_CURVE,
    ):
        assert (out / name).is_file(), name
    assert not out.with_name("adapter.tmp").exists()
    assert not out.with_name("adapter.work").exists()
    kinds = [e.event for e in events]
    assert kinds[0] == EventKind.START and kinds[-1] == EventKind.DONE
    assert kinds.count(EventKind.EPOCH) == 2
    assert events[-1].stop_reason is StopReason.COMPLETED
    steps = [e for e in events if e.event == EventKind.STEP]
    assert steps[-1].step == steps[-1].total_steps == result.steps
    assert all(None not in (e.loss, e.eta_s, e.total_steps) for e in steps)
    card = json.loads((out / MODEL_CARD).read_text())
    assert card["base_model"] == str(tiny_model_path)
    assert card["data"]["train_examples"] > 0 and len(card["data"]["hash"]) == 64
    assert card["hyperparameters"]["lora_r"] == 16
    assert card["format"]["blend_prompt"] == "like: <a> | <b>\ngenre:"
    assert card["lockbox_reads"] == []  # the lockbox was never read for it
    assert len(card["training"]["valid_loss_per_epoch"]) == 2
    assert (out / LOSS_CURVE).read_bytes()[:4] == b"\x89PNG"


def test_lora_round_trip_changes_only_lora_weights(
    tiny_model_path: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "adapter"
    train(tiny_dataset, out, _config(tiny_model_path, epochs=1, lora_dropout=0.0))
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_path))
    before = {k: v.clone() for k, v in base.state_dict().items()}
    peft_model = PeftModel.from_pretrained(base, str(out))
    lora = {k: v for k, v in peft_model.state_dict().items() if "lora_" in k}
    assert lora
    # lora_B starts at zero: training moved it.
    assert any(float(v.abs().sum()) > 0 for k, v in lora.items() if "lora_B" in k)
    for key, value in peft_model.get_base_model().state_dict().items():
        if "lora_" in key:
            continue
        plain = key.replace(".base_layer", "")
        assert torch.equal(value, before[plain]), key
    # The saved weights equal the loaded ones.
    saved = _weights(out / ADAPTER_WEIGHTS)
    assert len(saved) == len(lora)
    ids = torch.tensor([[1, 2, 3]])
    adapted = peft_model(ids).logits
    with peft_model.disable_adapter():
        plain_logits = peft_model(ids).logits
    assert not torch.allclose(adapted, plain_logits)


def test_training_is_seeded(tiny_model_path: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    import torch

    cfg = _config(tiny_model_path, epochs=1)
    train(tiny_dataset, tmp_path / "a", cfg)
    train(tiny_dataset, tmp_path / "b", cfg)
    a, b = _weights(tmp_path / "a" / ADAPTER_WEIGHTS), _weights(tmp_path / "b" / ADAPTER_WEIGHTS)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_interrupt_leaves_no_adapter_and_resume_finishes(
    tiny_model_path: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "adapter"
    cfg = _config(tiny_model_path, epochs=2)
    seen: list[int] = []

    def interrupt_at_step_3(event: TrainEvent) -> None:
        if event.event == EventKind.STEP and event.step is not None:
            seen.append(event.step)
            if event.step == 3:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tiny_dataset, out, cfg, progress=interrupt_at_step_3)
    assert not out.exists()
    assert (tmp_path / "adapter.work" / "checkpoint" / "state.json").is_file()

    events: list[TrainEvent] = []
    result = train(tiny_dataset, out, cfg, progress=events.append)
    start = events[0]
    assert start.resumed is True and start.step == 3
    steps = [e.step for e in events if e.event == EventKind.STEP]
    assert steps[0] == 4 and steps[-1] == result.steps
    assert (out / ADAPTER_WEIGHTS).is_file()
    assert not (tmp_path / "adapter.work").exists()


def test_changed_config_does_not_resume(
    tiny_model_path: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "adapter"

    def stop(event: TrainEvent) -> None:
        if event.event == EventKind.STEP and event.step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tiny_dataset, out, _config(tiny_model_path), progress=stop)
    events: list[TrainEvent] = []
    train(tiny_dataset, out, _config(tiny_model_path, lora_r=4, epochs=1), progress=events.append)
    assert events[0].resumed is False and events[0].step == 0


def test_early_stop_keeps_best_epoch(
    tiny_model_path: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    # No epoch can improve the validation loss by a whole nat: the second one stops the run.
    cfg = _config(tiny_model_path, epochs=4, patience=1, min_delta=1.0)
    events: list[TrainEvent] = []
    result = train(tiny_dataset, tmp_path / "adapter", cfg, progress=events.append)
    assert result.stopped_early and result.epochs_run == 2 and result.best_epoch == 1
    assert events[-1].stop_reason is StopReason.EARLY_STOPPED


def test_missing_dataset_is_a_readable_error(tiny_model_path: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="dataset build"):
        train(tmp_path / "nothing", tmp_path / "out", _config(tiny_model_path))


def test_select_by_reinvention_keeps_the_epoch_that_reinvents_most(
    tiny_model_path: Path, tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from model.train.sft import Trainer

    counts = iter([3, 9, 4])  # the second epoch re-invents most, whatever its loss
    monkeypatch.setattr(Trainer, "reinvention", lambda self, seed: next(counts))
    cfg = _config(tiny_model_path, epochs=3, patience=2, select_by="reinvention")
    events: list[TrainEvent] = []
    result = train(tiny_dataset, tmp_path / "adapter", cfg, progress=events.append)
    assert result.best_epoch == 2 and result.reinvented == [3, 9, 4]
    assert [e.reinvented for e in events if e.event == EventKind.EPOCH] == [3, 9, 4]
    card = json.loads((tmp_path / "adapter" / MODEL_CARD).read_text())
    assert card["training"]["reinvented_per_epoch"] == [3, 9, 4]
    assert card["training"]["selected_by"] == "reinvention"


def test_reinvention_counts_validation_genres_the_model_samples(
    tiny_model_path: Path, tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from model.dataset import read_examples
    from model.protocol import GenerationResult
    from model.sampler import Sampler
    from model.train.sft import Trainer

    cfg = _config(tiny_model_path, select_by="reinvention", select_samples=16)
    train_ex = read_examples(tiny_dataset / "train.jsonl")
    valid_ex = read_examples(tiny_dataset / "valid.jsonl")
    trainer = Trainer(cfg, None, train_ex, valid_ex)
    # The real sampler over the model in training: a count, and back to training mode.
    assert 0 <= trainer.reinvention(seed=1) <= len(valid_ex) and trainer.model.training
    held, seen = valid_ex[0].genre, train_ex[0].genre
    texts = (f" {held}", f" {held.upper()}", f" {seen}", " ", f" {held} unfinished")
    sampled = GenerationResult(texts=texts, model="m", finished=tuple([1, 1, 1, 1, 0]))
    monkeypatch.setattr(Sampler, "complete_batch", lambda self, requests: [sampled])
    # One validation genre, sampled twice (once in capitals); the unfinished row does not count.
    assert trainer.reinvention(seed=1) == 1


def test_unknown_selection_is_a_training_error(
    tiny_model_path: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    from model.errors import TrainingError

    with pytest.raises(TrainingError, match="select_by"):
        train(tiny_dataset, tmp_path / "out", _config(tiny_model_path, select_by="vibes"))


def _sequence_nll(trainer: Any, examples: list[Any]) -> list[float]:
    """Sum negative log-likelihood of each example's completion (end marker included)."""
    import torch

    from model.train._common import collate, encode, sequence_nll

    encoded = encode(trainer.tokenizer, examples)
    ids, mask, labels = collate(encoded, list(range(len(encoded))), trainer.pad_id)
    with torch.inference_mode():
        logits = trainer.model(input_ids=ids, attention_mask=mask).logits
    return [float(x) for x in sequence_nll(logits, labels)]


def test_a_copy_floor_makes_genres_likelier_than_it_less_likely_and_spares_like_examples(
    tiny_model_path: Path, tiny_dataset: Path
) -> None:
    from model.dataset import read_examples
    from model.train.sft import Trainer

    train_ex = read_examples(tiny_dataset / "train.jsonl")
    plain = [i for i, e in enumerate(train_ex) if e.like is None][:4]
    conditioned = [i for i, e in enumerate(train_ex) if e.like is not None][:4]
    assert len(plain) == len(conditioned) == 4

    def after_steps(**kw: Any) -> tuple[float, float]:
        """Sum NLL of the plain and the like: examples after 5 steps on a batch of both."""
        cfg = _config(tiny_model_path, epochs=50, learning_rate=2e-2, lora_dropout=0.0, **kw)
        trainer = Trainer(cfg, None, train_ex, [])
        for step in range(5):
            trainer.step(plain + conditioned, seed=step)
        trainer.model.eval()
        nll = _sequence_nll(trainer, train_ex)
        return sum(nll[i] for i in plain), sum(nll[i] for i in conditioned)

    before = _sequence_nll(Trainer(_config(tiny_model_path), None, train_ex, []), train_ex)
    plain_before, like_before = sum(before[i] for i in plain), sum(before[i] for i in conditioned)
    plain_free, like_free = after_steps()
    # A floor above every example's NLL: each plain one is "memorised" and held back.
    plain_held, like_held = after_steps(copy_floor=max(before) + 50.0, copy_weight=1.0)
    assert plain_free < plain_before and like_free < like_before  # plain training learns both
    assert plain_held > plain_before  # the floor pushes the plain genres down
    assert like_held < like_before  # and leaves the like: examples to be learned


def test_a_copy_floor_off_trains_exactly_as_before(
    tiny_model_path: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    train(tiny_dataset, tmp_path / "a", _config(tiny_model_path, epochs=1))
    train(tiny_dataset, tmp_path / "b", _config(tiny_model_path, epochs=1, copy_floor=0.0))
    a, b = _weights(tmp_path / "a" / ADAPTER_WEIGHTS), _weights(tmp_path / "b" / ADAPTER_WEIGHTS)
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


@pytest.mark.parametrize("kw", [{"copy_floor": -1.0}, {"copy_weight": -0.5}])
def test_a_negative_copy_floor_or_weight_is_a_training_error(
    tiny_model_path: Path, tiny_dataset: Path, tmp_path: Path, kw: dict[str, float]
) -> None:
    from model.errors import TrainingError

    with pytest.raises(TrainingError, match="copy_"):
        train(tiny_dataset, tmp_path / "out", _config(tiny_model_path, **kw))
