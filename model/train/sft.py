"""Full LoRA fine-tuning of the base model on a dataset folder (see :mod:`model.dataset`).

:func:`train` is seeded and reports progress through a callback (:class:`model.events.TrainEvent`
``start``/``step``/``epoch``/``done``; the CLI turns them into a tqdm bar or JSON lines). A
:class:`TrainLoop` computes the validation loss after every epoch, stops early when it stops
improving (keeping the best epoch's weights), and saves a :class:`Checkpoint` every few minutes
and at Ctrl-C into ``<output>.work/``, which the next run resumes. The output folder is assembled
in a temporary folder and renamed into place, so an interruption never leaves a half-written
adapter.

Output: ``adapter_model.safetensors``, ``adapter_config.json``, ``model_card.json``,
``known_genres.fingerprint`` and ``loss_curve.png``.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from model.base import LoadedModel, ModelSpec, load_model
from model.dataset import (
    FINGERPRINT_FILE,
    STATS_FILE,
    TRAIN_FILE,
    VALID_FILE,
    Example,
    dataset_hash,
    read_examples,
)
from model.errors import TrainingError
from model.events import EventKind, StopReason, TrainEvent
from model.filters import validate
from model.pipeline import DEFAULT_TEMPERATURE
from model.protocol import GenerationRequest
from model.textformat import END_MARKER, blend_like, build_prompt, parse_completion
from model.train._common import (
    Encoded,
    LossCurve,
    Progress,
    TrainResult,
    collate,
    encode,
    lr_lambda,
    publish_adapter,
    sequence_nll,
    write_adapter,
)

# How the kept epoch is chosen (TrainConfig.select_by), and how its re-invention is sampled:
# as the pipeline samples by default.
SELECT_BY = ("loss", "reinvention")
SELECT_TEMPERATURE = DEFAULT_TEMPERATURE
SELECT_TOP_P = 0.95

ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class TrainConfig(ModelSpec):
    """The base model (:class:`~model.base.ModelSpec`) and the hyper-parameters; the defaults
    are the ones the shipped adapter was trained with."""

    epochs: int = 3
    batch_size: int = 32
    learning_rate: float = 2e-3
    warmup_steps: int = 20
    weight_decay: float = 0.0
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = ALL_LINEAR
    # Only layers with index >= this get LoRA (0: every layer). Back-propagation stops at the
    # lowest adapted layer, so skipping the bottom layers makes every step cheaper.
    first_layer: int = 0
    seed: int = 0
    patience: int = 1
    min_delta: float = 0.005
    max_steps: int = 0  # 0: no limit (tests and quick experiments set it)
    max_valid: int = 1000
    # Which epoch is kept: "loss" (the lowest validation loss) or "reinvention" (the most
    # validation genres re-invented among `select_samples` completions sampled after the epoch:
    # what the adapter is for, rather than a proxy). Early stopping follows the same measure.
    select_by: str = "loss"
    select_samples: int = 1000
    checkpoint_every_s: float = 300.0
    # A floor on memorisation (0: off). A plain ``genre:`` example whose completion the model
    # already gives a negative log-likelihood (summed over its tokens, end marker included)
    # under ``copy_floor`` nats adds ``copy_weight`` times the shortfall to the loss, per
    # example of the batch: the likeliest real genres, which sampling would mostly give back
    # as copies, are held near exp(-copy_floor) instead of being learned ever more strongly.
    # ``like:`` examples are not held back.
    copy_floor: float = 0.0
    copy_weight: float = 0.5

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["target_modules"] = list(self.target_modules)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        if "target_modules" in values:
            values["target_modules"] = tuple(values["target_modules"])
        return cls(**values)


def _batches(encoded: list[Encoded], batch_size: int, rng: random.Random | None) -> list[list[int]]:
    """Indices grouped into batches of similar length (less padding), in shuffled order."""
    order = list(range(len(encoded)))
    if rng is not None:
        rng.shuffle(order)
    # Sort within windows of 50 batches by length, then shuffle the batches.
    window = batch_size * 50
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: len(encoded[i][0]))
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    if rng is not None:
        rng.shuffle(batches)
    return batches


def _layers_to_transform(model: Any, first_layer: int) -> list[int] | None:
    if first_layer <= 0:
        return None
    n_layers = int(model.config.num_hidden_layers)
    if first_layer >= n_layers:
        raise TrainingError(f"first_layer={first_layer} but the model has {n_layers} layers.")
    return list(range(first_layer, n_layers))


@dataclass
class TrainState:
    """Where a run stands (saved as JSON in every checkpoint)."""

    step: int = 0
    epoch: int = 0  # epochs finished
    step_in_epoch: int = 0
    step_losses: list[list[float]] = field(default_factory=list)  # [step, loss] pairs
    epoch_train_losses: list[float] = field(default_factory=list)
    valid_losses: list[float] = field(default_factory=list)
    best_valid: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0
    elapsed_s: float = 0.0  # training time of the runs before a resume
    # Validation genres re-invented after each epoch (select_by="reinvention" only).
    reinvented: list[int] = field(default_factory=list)

    def end_epoch(
        self,
        train_loss: float,
        valid_loss: float,
        min_delta: float,
        reinvented: int | None = None,
    ) -> bool:
        """Record a finished epoch; True when it is the best so far (keep its weights).

        By validation loss, or, when ``reinvented`` is given, by the most re-invented validation
        genres (a tie keeps the earlier epoch).

        >>> s = TrainState()
        >>> s.end_epoch(2.0, 1.5, 0.01), s.end_epoch(1.8, 1.495, 0.01), s.best_epoch, s.epoch
        (True, False, 1, 2)
        >>> r = TrainState()
        >>> r.end_epoch(2.0, 1.5, 0.01, 10), r.end_epoch(1.8, 1.6, 0.01, 14), r.best_epoch
        (True, True, 2)
        >>> r.end_epoch(1.7, 1.4, 0.01, 14), r.best_epoch, r.bad_epochs
        (False, 2, 1)
        """
        self.epoch_train_losses.append(train_loss)
        self.valid_losses.append(valid_loss)
        self.epoch += 1
        self.step_in_epoch = 0
        if reinvented is not None:
            best = max(self.reinvented, default=None)
            self.reinvented.append(reinvented)
            if best is None or reinvented > best:
                self.best_epoch = self.epoch
                self.bad_epochs = 0
                return True
            self.bad_epochs += 1
            return False
        if (
            math.isnan(valid_loss)
            or self.best_valid is None
            or (valid_loss < self.best_valid - min_delta)
        ):
            self.best_valid = self.best_valid if math.isnan(valid_loss) else valid_loss
            self.best_epoch = self.epoch
            self.bad_epochs = 0
            return True
        self.bad_epochs += 1
        return False


def _load_model(cfg: TrainConfig, data_dir: str | Path | None) -> LoadedModel:
    """The seeded base model with fresh LoRA layers (trained in float32), its tokenizer,
    device and dtype."""
    import torch
    from peft import LoraConfig, get_peft_model

    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    model, tokenizer, device, dtype = load_model(cfg, data_dir=data_dir)
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.target_modules),
        layers_to_transform=_layers_to_transform(model, cfg.first_layer),
        task_type="CAUSAL_LM",
        bias="none",
    )
    model = get_peft_model(model, lora)
    # LoRA weights train in float32 even when the frozen base runs in bfloat16.
    for param in model.parameters():
        if param.requires_grad:
            param.data = param.data.float()
    return LoadedModel(model, tokenizer, device, dtype)


class Trainer:
    """The model, its optimiser and learning-rate schedule, and the encoded data."""

    def __init__(
        self,
        cfg: TrainConfig,
        data_dir: str | Path | None,
        train: list[Example],
        valid: list[Example],
    ) -> None:
        import torch

        self.cfg = cfg
        self.model, tokenizer, self.device, dtype = _load_model(cfg, data_dir)
        self.tokenizer = tokenizer
        self.held_out = _held_out(train, valid) if cfg.select_by == "reinvention" else None
        self.dtype = str(dtype).replace("torch.", "")
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.n_trainable = sum(p.numel() for p in self.trainable)
        self.train_data = encode(tokenizer, train)
        self.plain = [ex.like is None for ex in train]  # what the copy floor holds back
        self.valid_data = encode(tokenizer, valid)
        self.pad_id = int(tokenizer.pad_token_id)
        self.steps_per_epoch = math.ceil(len(self.train_data) / cfg.batch_size)
        total = self.steps_per_epoch * cfg.epochs
        self.total_steps = min(total, cfg.max_steps) if cfg.max_steps else total
        self.optimizer = torch.optim.AdamW(
            self.trainable, lr=cfg.learning_rate, weight_decay=cfg.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(cfg.warmup_steps, self.total_steps)
        )

    def start_event(self, step: int, *, resumed: bool) -> TrainEvent:
        return TrainEvent(
            EventKind.START,
            step=step,
            total_steps=self.total_steps,
            epochs=self.cfg.epochs,
            train_examples=len(self.train_data),
            valid_examples=len(self.valid_data),
            trainable_params=self.n_trainable,
            device=self.device,
            dtype=self.dtype,
            resumed=resumed,
        )

    def step(self, indices: list[int], seed: int) -> float:
        """One optimiser step on a batch; its training loss."""
        import torch

        torch.manual_seed(seed)
        ids, mask, labels = collate(self.train_data, indices, self.pad_id)
        outputs = self.model(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            labels=labels.to(self.device),
        )
        loss = outputs.loss
        if self.cfg.copy_floor > 0:
            loss = loss + self.cfg.copy_weight * self._copy_penalty(outputs.logits, labels, indices)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.trainable, 1.0)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(outputs.loss.detach())

    def _copy_penalty(self, logits: Any, labels: Any, indices: list[int]) -> Any:
        """Mean over the batch of how far each plain example's sequence NLL is under the floor."""
        import torch

        nll = sequence_nll(logits, labels)
        plain = torch.tensor([self.plain[i] for i in indices], device=nll.device)
        shortfall = torch.relu(self.cfg.copy_floor - nll) * plain
        return shortfall.sum() / len(indices)

    @property
    def lr(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    def valid_loss(self) -> float:
        """Mean token loss over the validation genres (NaN without any)."""
        import torch

        if not self.valid_data:
            return float("nan")
        self.model.eval()
        total, count = 0.0, 0
        with torch.inference_mode():
            for indices in _batches(self.valid_data, 64, None):
                ids, mask, labels = collate(self.valid_data, indices, self.pad_id)
                outputs = self.model(
                    input_ids=ids.to(self.device), attention_mask=mask.to(self.device)
                )
                logits = outputs.logits[:, :-1].float()
                target = labels[:, 1:].to(self.device)
                loss = torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="sum"
                )
                total += float(loss)
                count += int((target != -100).sum())
        self.model.train()
        return total / max(count, 1)

    def reinvention(self, seed: int) -> int:
        """Distinct validation genres among ``select_samples`` completions of the bare prompt,
        sampled as production does (temperature, top-p), with the same seed every epoch."""
        from model.sampler import Sampler

        if self.held_out is None:
            raise TrainingError("reinvention needs select_by='reinvention'.")
        padding_side = self.tokenizer.padding_side
        self.model.eval()
        try:
            sampler = Sampler(self.model, self.tokenizer, "training", device=self.device)
            request = GenerationRequest(
                prompt=build_prompt(),
                n=self.cfg.select_samples,
                temperature=SELECT_TEMPERATURE,
                top_p=SELECT_TOP_P,
                max_tokens=16,
                stop=(END_MARKER,),
                seed=seed,
            )
            result = sampler.complete_batch([request])[0]
        finally:
            self.model.train()
            self.tokenizer.padding_side = padding_side
        finished = result.finished or (True,) * len(result.texts)
        names = [
            parse_completion(text, require_end=False)
            for text, done in zip(result.texts, finished, strict=True)
            if done
        ]
        return len(self.held_out.reinvented(n for n in names if n and validate(n) is None))

    def lora_weights(self) -> dict[str, Any]:
        """A copy of the LoRA weights (the best epoch's are kept this way)."""
        from peft import get_peft_model_state_dict

        return {k: v.detach().clone() for k, v in get_peft_model_state_dict(self.model).items()}

    def load_lora_weights(self, weights: dict[str, Any]) -> None:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(self.model, weights)


class Checkpoint:
    """``<output>.work/checkpoint``: the LoRA weights, optimiser, schedule, best weights and
    :class:`TrainState` of an unfinished run, resumed only by a run with the same signature."""

    def __init__(self, work: Path, cfg: TrainConfig, data_hash: str) -> None:
        self.work = work
        self.folder = work / "checkpoint"
        # What a checkpoint must match to be resumed (the thread count may change between runs).
        config = {k: v for k, v in cfg.to_dict().items() if k != "threads"}
        self.signature = {"config": config, "data_hash": data_hash}

    def restore(self, trainer: Trainer) -> tuple[TrainState, dict[str, Any] | None] | None:
        """Load the checkpoint into ``trainer``: its state and best weights; None when there is
        none, or when it belongs to another configuration or dataset (then it is deleted)."""
        import torch

        if not (self.folder / "state.json").is_file():
            return None
        saved = json.loads((self.folder / "state.json").read_text())
        if saved.get("signature") != self.signature:
            self.discard()
            return None
        state = TrainState(**saved["state"])

        def load(name: str) -> Any:
            return torch.load(self.folder / name, weights_only=True)

        trainer.load_lora_weights(load("adapter.pt"))
        trainer.optimizer.load_state_dict(load("optimizer.pt"))
        trainer.scheduler.load_state_dict(load("scheduler.pt"))
        best = load("best.pt") if (self.folder / "best.pt").is_file() else None
        return state, best

    def save(self, trainer: Trainer, state: TrainState, best: dict[str, Any] | None) -> None:
        """Write a new checkpoint next to the old one, then swap them."""
        import torch
        from peft import get_peft_model_state_dict

        tmp = self.work / "checkpoint.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        torch.save(get_peft_model_state_dict(trainer.model), tmp / "adapter.pt")
        torch.save(trainer.optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(trainer.scheduler.state_dict(), tmp / "scheduler.pt")
        if best is not None:
            torch.save(best, tmp / "best.pt")
        data = {"signature": self.signature, "state": asdict(state)}
        (tmp / "state.json").write_text(json.dumps(data))
        shutil.rmtree(self.folder, ignore_errors=True)
        tmp.rename(self.folder)

    def discard(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)


class TrainLoop:
    """Epochs of steps: progress events, early stopping, checkpoints every few minutes, at the
    end of each epoch and at Ctrl-C."""

    def __init__(
        self,
        trainer: Trainer,
        state: TrainState,
        checkpoint: Checkpoint,
        best: dict[str, Any] | None,
        emit: Progress,
    ) -> None:
        self.trainer, self.cfg, self.state = trainer, trainer.cfg, state
        self.checkpoint, self.best, self.emit = checkpoint, best, emit
        self.started = self.last_checkpoint = time.perf_counter()
        self.first_step = state.step
        self.stop_reason = StopReason.COMPLETED

    def elapsed(self) -> float:
        """Training time, including the runs this one resumed."""
        return self.state.elapsed_s + time.perf_counter() - self.started

    def run(self) -> StopReason:
        self.trainer.model.train()
        try:
            while self.state.epoch < self.cfg.epochs and self.state.step < self.trainer.total_steps:
                if not self._epoch():
                    break  # max_steps ended it
                if (
                    self.state.bad_epochs >= self.cfg.patience
                    and self.state.epoch < self.cfg.epochs
                ):
                    return StopReason.EARLY_STOPPED
                self.save()
        except KeyboardInterrupt:
            self.save()
            raise
        return StopReason.COMPLETED

    def save(self) -> None:
        snapshot = replace(self.state, elapsed_s=self.elapsed())
        self.checkpoint.save(self.trainer, snapshot, self.best)
        self.last_checkpoint = time.perf_counter()

    def _epoch(self) -> bool:
        """Train the rest of the epoch; False when ``max_steps`` stopped it early."""
        state = self.state
        rng = random.Random(self.cfg.seed * 1000 + state.epoch)
        batches = _batches(self.trainer.train_data, self.cfg.batch_size, rng)
        losses: list[float] = []
        for batch_index, indices in enumerate(batches):
            if batch_index < state.step_in_epoch:
                continue  # resumed mid-epoch: these batches are done
            if state.step >= self.trainer.total_steps:
                break
            losses.append(self._step(indices, batch_index))
        finished = state.step_in_epoch >= len(batches)
        train_loss = sum(losses) / len(losses) if losses else float("nan")
        valid_loss = self.trainer.valid_loss()
        reinvented = None
        if self.cfg.select_by == "reinvention":
            reinvented = self.trainer.reinvention(seed=self.cfg.seed + 7919)
        if state.end_epoch(train_loss, valid_loss, self.cfg.min_delta, reinvented):
            self.best = self.trainer.lora_weights()
        self._event(
            EventKind.EPOCH,
            epoch=state.epoch,
            loss=round(train_loss, 4),
            valid_loss=round(valid_loss, 4),
            best_epoch=state.best_epoch,
            **({"reinvented": reinvented} if reinvented is not None else {}),
        )
        return finished

    def _step(self, indices: list[int], batch_index: int) -> float:
        state = self.state
        value = self.trainer.step(indices, seed=self.cfg.seed + state.step)
        state.step += 1
        state.step_in_epoch = batch_index + 1
        state.step_losses.append([state.step, value])
        elapsed = time.perf_counter() - self.started
        rate = elapsed / max(state.step - self.first_step, 1)
        self._event(
            EventKind.STEP,
            epoch=state.epoch + 1,
            loss=round(value, 4),
            lr=self.trainer.lr,
            eta_s=round(rate * (self.trainer.total_steps - state.step), 1),
            elapsed_s=round(state.elapsed_s + elapsed, 1),
        )
        if time.perf_counter() - self.last_checkpoint > self.cfg.checkpoint_every_s:
            self.save()
        return value

    def _event(self, kind: EventKind, **values: Any) -> None:
        self.emit(
            TrainEvent(kind, step=self.state.step, total_steps=self.trainer.total_steps, **values)
        )


def train(
    dataset_dir: str | Path,
    output: str | Path,
    config: TrainConfig | None = None,
    *,
    progress: Progress | None = None,
    data_dir: str | Path | None = None,
    resume: bool = True,
    name: str | None = None,
    notes: dict[str, Any] | None = None,
) -> TrainResult:
    """Train a LoRA adapter on ``dataset_dir`` and write it to ``output`` (see module doc)."""
    cfg = config or TrainConfig()
    emit = progress or (lambda event: None)
    dataset = Path(dataset_dir)
    train_examples, valid_examples = _read_split(dataset, cfg)
    out = Path(output)
    data_hash = dataset_hash(dataset)
    started = time.perf_counter()
    trainer = Trainer(cfg, data_dir, train_examples, valid_examples)
    checkpoint = Checkpoint(out.with_name(out.name + ".work"), cfg, data_hash)
    restored = checkpoint.restore(trainer) if resume else None
    state, best = restored or (TrainState(), None)
    emit(trainer.start_event(state.step, resumed=restored is not None))
    loop = TrainLoop(trainer, state, checkpoint, best, emit)
    stop_reason = loop.run()
    if loop.best is not None:
        trainer.load_lora_weights(loop.best)
    result = TrainResult(
        output=out,
        steps=state.step,
        epochs_run=state.epoch,
        best_epoch=state.best_epoch,
        train_losses=state.epoch_train_losses,
        valid_losses=state.valid_losses,
        reinvented=state.reinvented,
        wall_s=loop.elapsed(),
        stopped_early=stop_reason is StopReason.EARLY_STOPPED,
    )
    card = _model_card(cfg, trainer, result, dataset, data_hash, name, notes, started)
    tmp = out.with_name(out.name + ".tmp")
    curve = LossCurve(state.step_losses, state.valid_losses, trainer.steps_per_epoch)
    write_adapter(tmp, trainer.model, card, dataset / FINGERPRINT_FILE, curve)
    publish_adapter(tmp, out)
    checkpoint.discard()
    emit(
        TrainEvent(
            EventKind.DONE,
            step=result.steps,
            total_steps=trainer.total_steps,
            loss=round(result.train_losses[-1], 4) if result.train_losses else None,
            valid_loss=round(result.valid_losses[-1], 4) if result.valid_losses else None,
            output=str(out),
            dataset=str(dataset),
            wall_s=round(result.wall_s, 1),
            eta_s=0,
            stop_reason=stop_reason,
        )
    )
    return result


def _held_out(train: Sequence[Example], valid: Sequence[Example]) -> Any:
    """The validation split as re-invention targets (see :class:`model.evaluate.HeldOut`)."""
    from model.evaluate import HeldOut

    return HeldOut.build([e.genre for e in (*train, *valid)], train, valid)


def _read_split(dataset: Path, cfg: TrainConfig) -> tuple[list[Example], list[Example]]:
    train_examples = read_examples(dataset / TRAIN_FILE)
    valid_examples = read_examples(dataset / VALID_FILE)[: cfg.max_valid]
    if not train_examples:
        raise TrainingError(f"{dataset / TRAIN_FILE} has no examples.")
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise TrainingError("epochs and batch_size must be at least 1.")
    if cfg.copy_floor < 0 or cfg.copy_weight < 0:
        raise TrainingError(
            f"copy_floor and copy_weight must be at least 0, not {cfg.copy_floor} and "
            f"{cfg.copy_weight}."
        )
    if cfg.select_by not in SELECT_BY:
        raise TrainingError(
            f"select_by must be one of {', '.join(SELECT_BY)}, not {cfg.select_by!r}."
        )
    if cfg.select_by == "reinvention" and not valid_examples:
        raise TrainingError("select_by='reinvention' needs validation genres.")
    return train_examples, valid_examples


def _model_card(
    cfg: TrainConfig,
    trainer: Trainer,
    result: TrainResult,
    dataset: Path,
    data_hash: str,
    name: str | None,
    notes: dict[str, Any] | None,
    started: float,
) -> dict[str, Any]:
    """How the adapter was made (``eval`` is filled by ``microgenre eval --update-card``)."""
    stats = dataset / STATS_FILE
    data = {
        "hash": data_hash,
        "train_examples": len(trainer.train_data),
        "valid_examples": len(trainer.valid_data),
        "dataset": json.loads(stats.read_text()) if stats.is_file() else {},
    }
    return {
        "name": name or f"lora-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}",
        "base_model": cfg.base_model,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "format": {
            "prompt": build_prompt(),
            "like_prompt": build_prompt("<text>"),
            # A genre descended from two parents (model.textformat.blend_like).
            "blend_prompt": build_prompt(blend_like("<a>", "<b>")),
            "end": "\\n",
        },
        "data": data,
        "hyperparameters": cfg.to_dict(),
        "trainable_params": trainer.n_trainable,
        "device": trainer.device,
        "dtype": trainer.dtype,
        "training": {
            "steps": result.steps,
            "epochs_run": result.epochs_run,
            "best_epoch": result.best_epoch,
            "stopped_early": result.stopped_early,
            "wall_s": round(result.wall_s, 1),
            "total_s": round(time.perf_counter() - started, 1),
            "train_loss_per_epoch": [round(x, 4) for x in result.train_losses],
            "valid_loss_per_epoch": [round(x, 4) for x in result.valid_losses],
            "selected_by": cfg.select_by,
            **({"reinvented_per_epoch": result.reinvented} if result.reinvented else {}),
        },
        "eval": {},
        # `microgenre eval --lockbox` appends one entry per read (model.artifacts.log_lockbox_read).
        "lockbox_reads": [],
        **({"notes": notes} if notes else {}),
    }
