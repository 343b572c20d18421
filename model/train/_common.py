"""What full training (:mod:`model.train.sft`) and server runs (:mod:`model.train.votes`) share:
token encoding and padding, the learning-rate schedule, the result of a run, and the writing and
publishing of an adapter folder (see :mod:`model.artifacts` for its files).

Package-internal: the names are public to the modules of :mod:`model.train`, not beyond.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.artifacts import ADAPTER_WEIGHTS, FINGERPRINT, LEADING_WORDS, LOSS_CURVE, write_card
from model.dataset import Example
from model.events import TrainEvent
from model.textformat import build_prompt, format_example

Progress = Callable[[TrainEvent], None]

# A training row: its token ids and the number of prompt tokens (masked out of the loss).
Encoded = tuple[list[int], int]


@dataclass
class TrainResult:
    """What a run did: where it wrote the adapter, its steps, epochs and losses."""

    output: Path
    steps: int
    epochs_run: int
    best_epoch: int
    train_losses: list[float] = field(default_factory=list)
    valid_losses: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    stopped_early: bool = False
    reinvented: list[int] = field(default_factory=list)


def encode(tokenizer: Any, examples: Sequence[Example]) -> list[Encoded]:
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


def sequence_nll(logits: Any, labels: Any) -> Any:
    """Per row, the summed negative log-likelihood of its labelled tokens (the completion, end
    marker included) under ``logits`` from the same ``input_ids``: ``-log p(completion)``."""
    import torch

    target = labels[:, 1:].to(logits.device)
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].float().transpose(1, 2), target, ignore_index=-100, reduction="none"
    ).sum(dim=1)


def collate(encoded: Sequence[Encoded], indices: list[int], pad_id: int) -> Any:
    """``(input_ids, attention_mask, labels)`` of the rows ``indices``, right-padded; labels
    are -100 over the prompt and the padding."""
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


def lr_lambda(warmup: int, total: int) -> Callable[[int], float]:
    """Linear warm-up over ``warmup`` steps, then a cosine decay to 5 % at ``total``.

    >>> f = lr_lambda(2, 10)
    >>> [round(f(s), 2) for s in (0, 1, 2, 6, 10, 50)]
    [0.5, 1.0, 1.0, 0.5, 0.05, 0.05]
    """

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


@dataclass(frozen=True)
class LossCurve:
    """The losses of a run, drawn into ``loss_curve.png``: ``steps`` holds ``[step, loss]``
    pairs, ``valid`` one validation loss per epoch of ``steps_per_epoch`` steps."""

    steps: Sequence[Sequence[float]]
    valid: Sequence[float] = ()
    steps_per_epoch: int = 1

    def write(self, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
        if self.steps:
            xs = [int(s) for s, _ in self.steps]
            ys = [float(v) for _, v in self.steps]
            k = max(1, len(ys) // 50)
            smooth = [
                sum(ys[max(0, i - k) : i + 1]) / len(ys[max(0, i - k) : i + 1])
                for i in range(len(ys))
            ]
            ax.plot(xs, ys, color="#9ecae1", linewidth=0.6, label="train (per step)")
            ax.plot(xs, smooth, color="#3182bd", linewidth=1.5, label="train (smoothed)")
        if self.valid:
            ax.plot(
                [self.steps_per_epoch * (i + 1) for i in range(len(self.valid))],
                self.valid,
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


def write_adapter(
    folder: Path, model: Any, card: dict[str, Any], fingerprint: Path, curve: LossCurve
) -> None:
    """Write the whole adapter folder of the PEFT ``model`` into an empty ``folder``: weights
    (compacted), config, ``card``, the dataset's ``fingerprint`` (and the leading-word prior
    next to it) and the loss curve."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    # Name the base model as the card does (as configured), not the local cache path it was
    # loaded from.
    for peft_config in model.peft_config.values():
        peft_config.base_model_name_or_path = card["base_model"]
    model.save_pretrained(str(folder))
    write_card(folder, card)
    if fingerprint.is_file():
        shutil.copyfile(fingerprint, folder / FINGERPRINT)
        # The training split's leading-word prior lies next to the fingerprint it came with.
        prior = fingerprint.with_name(LEADING_WORDS)
        if prior.is_file():
            shutil.copyfile(prior, folder / LEADING_WORDS)
    curve.write(folder / LOSS_CURVE)
    compact_adapter_weights(folder / ADAPTER_WEIGHTS)
    (folder / "README.md").unlink(missing_ok=True)


def publish_adapter(staged: Path, out: Path) -> None:
    """Move the finished folder ``staged`` to ``out``, replacing what was there: a reader sees
    the old adapter or the new one, never half of one."""
    if out.exists():
        old = out.with_name(out.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        staged.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        staged.rename(out)
