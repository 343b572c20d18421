"""LoRA fine-tuning of the base model on a dataset folder (see :mod:`model.dataset`).

:func:`train` is seeded, reports progress through a callback (``start``/``step``/``epoch``/
``done`` events, the CLI turns them into a tqdm bar or JSON lines), computes the validation loss
after every epoch, stops early when it stops improving (keeping the best epoch's weights),
checkpoints every few minutes and at Ctrl-C into ``<output>.work/`` and resumes from there. The
output folder is assembled in a temporary folder and renamed into place, so an interruption never
leaves a half-written adapter.

Output: ``adapter_model.safetensors``, ``adapter_config.json``, ``model_card.json``,
``known_genres.fingerprint`` and ``loss_curve.png``.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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
from model.textformat import build_prompt, format_example

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
MODEL_CARD = "model_card.json"
FINGERPRINT = "known_genres.fingerprint"
LOSS_CURVE = "loss_curve.png"

ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

Progress = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters; the defaults are the ones the shipped adapter was trained with."""

    base_model: str = "smollm2-135m"
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
    checkpoint_every_s: float = 300.0
    device: str = "auto"
    dtype: str = "auto"
    threads: int = 0

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


@dataclass
class TrainResult:
    output: Path
    steps: int
    epochs_run: int
    best_epoch: int
    train_losses: list[float] = field(default_factory=list)
    valid_losses: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    stopped_early: bool = False


def _encode(tokenizer: Any, examples: Sequence[Example]) -> list[tuple[list[int], int]]:
    """Token ids of each example and the number of prompt tokens (masked out of the loss)."""
    out = []
    for ex in examples:
        prompt_ids = tokenizer(build_prompt(ex.like), add_special_tokens=False)["input_ids"]
        full_ids = tokenizer(format_example(ex.genre, ex.like), add_special_tokens=False)[
            "input_ids"
        ]
        if full_ids[: len(prompt_ids)] != prompt_ids:
            # Tokenisation merged across the boundary: mask what the prompt certainly covers.
            common = 0
            for a, b in zip(prompt_ids, full_ids, strict=False):
                if a != b:
                    break
                common += 1
            out.append((full_ids, common))
        else:
            out.append((full_ids, len(prompt_ids)))
    return out


def _batches(
    encoded: list[tuple[list[int], int]], batch_size: int, rng: random.Random | None
) -> list[list[int]]:
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


def _collate(encoded: list[tuple[list[int], int]], indices: list[int], pad_id: int) -> Any:
    import torch

    width = max(len(encoded[i][0]) for i in indices)
    ids = torch.full((len(indices), width), pad_id, dtype=torch.long)
    labels = torch.full((len(indices), width), -100, dtype=torch.long)
    mask = torch.zeros((len(indices), width), dtype=torch.long)
    for row, i in enumerate(indices):
        tokens, prompt_len = encoded[i]
        ids[row, : len(tokens)] = torch.tensor(tokens)
        labels[row, prompt_len : len(tokens)] = torch.tensor(tokens[prompt_len:])
        mask[row, : len(tokens)] = 1
    return ids, mask, labels


def _layers_to_transform(model: Any, first_layer: int) -> list[int] | None:
    if first_layer <= 0:
        return None
    n_layers = int(model.config.num_hidden_layers)
    if first_layer >= n_layers:
        raise TrainingError(f"first_layer={first_layer} but the model has {n_layers} layers.")
    return list(range(first_layer, n_layers))


def _lr_lambda(warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(warmup, 1)
        progress = (step - warmup) / max(total - warmup, 1)
        return max(0.05, 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))

    return factor


def compact_adapter_weights(path: Path) -> None:
    """Store float32 LoRA weights as bfloat16: half the size, and sampling merges them into a
    bfloat16 (or float32) base anyway. PEFT casts them back to the module dtype on load."""
    import torch
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path))
    compact = {
        k: v.to(torch.bfloat16) if v.dtype == torch.float32 else v for k, v in tensors.items()
    }
    tmp = path.with_name(path.name + ".tmp")
    save_file(compact, str(tmp), metadata={"format": "pt"})
    tmp.replace(path)


def _write_loss_curve(
    path: Path, steps: list[tuple[int, float]], valid: list[float], spe: int
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    if steps:
        xs = [s for s, _ in steps]
        ys = [v for _, v in steps]
        k = max(1, len(ys) // 50)
        smooth = [
            sum(ys[max(0, i - k) : i + 1]) / len(ys[max(0, i - k) : i + 1]) for i in range(len(ys))
        ]
        ax.plot(xs, ys, color="#9ecae1", linewidth=0.6, label="train (per step)")
        ax.plot(xs, smooth, color="#3182bd", linewidth=1.5, label="train (smoothed)")
    if valid:
        ax.plot(
            [spe * (i + 1) for i in range(len(valid))],
            valid,
            "o-",
            color="#e6550d",
            label="validation",
        )
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


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
    import torch
    from peft import (
        LoraConfig,
        get_peft_model,
        get_peft_model_state_dict,
        set_peft_model_state_dict,
    )

    from model.base import load_base, pick_device, pick_dtype, set_threads

    cfg = config or TrainConfig()
    emit = progress or (lambda event: None)
    dataset = Path(dataset_dir)
    train_examples = read_examples(dataset / TRAIN_FILE)
    valid_examples = read_examples(dataset / VALID_FILE)[: cfg.max_valid]
    if not train_examples:
        raise TrainingError(f"{dataset / TRAIN_FILE} has no examples.")
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise TrainingError("epochs and batch_size must be at least 1.")
    out = Path(output)
    work = out.with_name(out.name + ".work")
    ckpt = work / "checkpoint"
    data_hash = dataset_hash(dataset)

    started = time.perf_counter()
    set_threads(cfg.threads)
    device = pick_device(cfg.device)
    dtype = pick_dtype(cfg.dtype, device)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    model, tokenizer = load_base(cfg.base_model, data_dir=data_dir, device=device, dtype=dtype)
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
    trainable = [p for p in model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in trainable)

    encoded_train = _encode(tokenizer, train_examples)
    encoded_valid = _encode(tokenizer, valid_examples)
    pad_id = int(tokenizer.pad_token_id)
    steps_per_epoch = math.ceil(len(encoded_train) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    optimizer = torch.optim.AdamW(trainable, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(cfg.warmup_steps, total_steps)
    )

    state: dict[str, Any] = {
        "step": 0,
        "epoch": 0,
        "step_in_epoch": 0,
        "step_losses": [],
        "epoch_train_losses": [],
        "valid_losses": [],
        "best_valid": None,
        "best_epoch": 0,
        "bad_epochs": 0,
        "elapsed_s": 0.0,
    }
    best_weights: dict[str, Any] | None = None
    # What a checkpoint must match to be resumed (the thread count may change between runs).
    signature = {
        "config": {k: v for k, v in cfg.to_dict().items() if k not in ("threads",)},
        "data_hash": data_hash,
    }
    resumed = False
    if resume and (ckpt / "state.json").is_file():
        saved = json.loads((ckpt / "state.json").read_text())
        if saved.get("signature") == signature:
            state = saved["state"]
            set_peft_model_state_dict(model, torch.load(ckpt / "adapter.pt", weights_only=True))
            optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True))
            scheduler.load_state_dict(torch.load(ckpt / "scheduler.pt", weights_only=True))
            if (ckpt / "best.pt").is_file():
                best_weights = torch.load(ckpt / "best.pt", weights_only=True)
            resumed = True
        else:
            shutil.rmtree(work, ignore_errors=True)

    def save_checkpoint() -> None:
        tmp = work / "checkpoint.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        torch.save(get_peft_model_state_dict(model), tmp / "adapter.pt")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        if best_weights is not None:
            torch.save(best_weights, tmp / "best.pt")
        snapshot = {**state, "elapsed_s": state["elapsed_s"] + time.perf_counter() - t_run}
        (tmp / "state.json").write_text(json.dumps({"signature": signature, "state": snapshot}))
        shutil.rmtree(ckpt, ignore_errors=True)
        tmp.rename(ckpt)

    def valid_loss() -> float:
        if not encoded_valid:
            return float("nan")
        model.eval()
        total, count = 0.0, 0
        with torch.inference_mode():
            for indices in _batches(encoded_valid, 64, None):
                ids, mask, labels = _collate(encoded_valid, indices, pad_id)
                outputs = model(input_ids=ids.to(device), attention_mask=mask.to(device))
                logits = outputs.logits[:, :-1].float()
                target = labels[:, 1:].to(device)
                loss = torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="sum"
                )
                total += float(loss)
                count += int((target != -100).sum())
        model.train()
        return total / max(count, 1)

    emit(
        {
            "event": "start",
            "step": state["step"],
            "total_steps": total_steps,
            "epochs": cfg.epochs,
            "train_examples": len(train_examples),
            "valid_examples": len(valid_examples),
            "trainable_params": n_trainable,
            "device": device,
            "dtype": str(dtype).replace("torch.", ""),
            "resumed": resumed,
        }
    )
    t_run = time.perf_counter()
    first_step = state["step"]
    last_ckpt = time.perf_counter()
    stopped_early = False
    model.train()
    try:
        while state["epoch"] < cfg.epochs and state["step"] < total_steps:
            rng = random.Random(cfg.seed * 1000 + state["epoch"])
            batches = _batches(encoded_train, cfg.batch_size, rng)
            epoch_losses: list[float] = []
            for batch_index, indices in enumerate(batches):
                if batch_index < state["step_in_epoch"]:
                    continue  # resumed mid-epoch: these batches are done
                if state["step"] >= total_steps:
                    break
                torch.manual_seed(cfg.seed + state["step"])
                ids, mask, labels = _collate(encoded_train, indices, pad_id)
                outputs = model(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device),
                    labels=labels.to(device),
                )
                loss = outputs.loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trainable, 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                value = float(loss.detach())
                epoch_losses.append(value)
                state["step"] += 1
                state["step_in_epoch"] = batch_index + 1
                state["step_losses"].append([state["step"], value])
                done = state["step"]
                elapsed = time.perf_counter() - t_run
                rate = elapsed / max(done - first_step, 1)
                emit(
                    {
                        "event": "step",
                        "step": done,
                        "total_steps": total_steps,
                        "epoch": state["epoch"] + 1,
                        "loss": round(value, 4),
                        "lr": scheduler.get_last_lr()[0],
                        "eta_s": round(rate * (total_steps - done), 1),
                        "elapsed_s": round(state["elapsed_s"] + elapsed, 1),
                    }
                )
                if time.perf_counter() - last_ckpt > cfg.checkpoint_every_s:
                    save_checkpoint()
                    last_ckpt = time.perf_counter()
            # End of an epoch (or of max_steps inside it).
            finished_epoch = state["step_in_epoch"] >= len(batches)
            mean_train = sum(epoch_losses) / len(epoch_losses) if epoch_losses else float("nan")
            vloss = valid_loss()
            state["epoch_train_losses"].append(mean_train)
            state["valid_losses"].append(vloss)
            improved = state["best_valid"] is None or vloss < state["best_valid"] - cfg.min_delta
            if improved or math.isnan(vloss):
                state["best_valid"] = vloss if not math.isnan(vloss) else state["best_valid"]
                state["best_epoch"] = state["epoch"] + 1
                state["bad_epochs"] = 0
                best_weights = {
                    k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()
                }
            else:
                state["bad_epochs"] += 1
            emit(
                {
                    "event": "epoch",
                    "step": state["step"],
                    "total_steps": total_steps,
                    "epoch": state["epoch"] + 1,
                    "loss": round(mean_train, 4),
                    "valid_loss": round(vloss, 4),
                    "best_epoch": state["best_epoch"],
                }
            )
            state["epoch"] += 1
            state["step_in_epoch"] = 0
            if not finished_epoch:
                break
            if state["bad_epochs"] >= cfg.patience and state["epoch"] < cfg.epochs:
                stopped_early = True
                break
            save_checkpoint()
            last_ckpt = time.perf_counter()
    except KeyboardInterrupt:
        save_checkpoint()
        raise

    if best_weights is not None:
        set_peft_model_state_dict(model, best_weights)
    wall = state["elapsed_s"] + time.perf_counter() - t_run
    result = TrainResult(
        output=out,
        steps=state["step"],
        epochs_run=state["epoch"],
        best_epoch=state["best_epoch"],
        train_losses=state["epoch_train_losses"],
        valid_losses=state["valid_losses"],
        wall_s=wall,
        stopped_early=stopped_early,
    )
    stats_path = dataset / STATS_FILE
    data_stats = json.loads(stats_path.read_text()) if stats_path.is_file() else {}
    card = {
        "name": name or f"lora-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}",
        "base_model": cfg.base_model,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "format": {"prompt": build_prompt(), "like_prompt": build_prompt("<text>"), "end": "\\n"},
        "data": {
            "hash": data_hash,
            "train_examples": len(train_examples),
            "valid_examples": len(valid_examples),
            "dataset": data_stats,
        },
        "hyperparameters": cfg.to_dict(),
        "trainable_params": n_trainable,
        "device": device,
        "dtype": str(dtype).replace("torch.", ""),
        "training": {
            "steps": result.steps,
            "epochs_run": result.epochs_run,
            "best_epoch": result.best_epoch,
            "stopped_early": stopped_early,
            "wall_s": round(wall, 1),
            "total_s": round(time.perf_counter() - started, 1),
            "train_loss_per_epoch": [round(x, 4) for x in result.train_losses],
            "valid_loss_per_epoch": [round(x, 4) for x in result.valid_losses],
        },
        "eval": {},
        **({"notes": notes} if notes else {}),
    }
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    # Name the base model as configured, not the local cache path it was loaded from.
    for peft_config in model.peft_config.values():
        peft_config.base_model_name_or_path = cfg.base_model
    model.save_pretrained(str(tmp))
    (tmp / MODEL_CARD).write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    if (dataset / FINGERPRINT_FILE).is_file():
        shutil.copyfile(dataset / FINGERPRINT_FILE, tmp / FINGERPRINT)
    _write_loss_curve(
        tmp / LOSS_CURVE,
        [(int(s), float(v)) for s, v in state["step_losses"]],
        state["valid_losses"],
        steps_per_epoch,
    )
    compact_adapter_weights(tmp / ADAPTER_WEIGHTS)
    for stray in tmp.iterdir():
        if stray.name == "README.md":
            stray.unlink()
    if out.exists():
        old = out.with_name(out.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(out)
    shutil.rmtree(work, ignore_errors=True)
    emit(
        {
            "event": "done",
            "step": result.steps,
            "total_steps": total_steps,
            "loss": round(result.train_losses[-1], 4) if result.train_losses else None,
            "valid_loss": round(result.valid_losses[-1], 4) if result.valid_losses else None,
            "output": str(out),
            "wall_s": round(wall, 1),
            "eta_s": 0,
        }
    )
    return result
