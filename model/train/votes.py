"""Server runs: the short fine-tune a server's ``/retrain`` starts.

:func:`server_run` loads the server's current adapter trainable, learns from the server's 👍/👎
votes (:mod:`model.kto`, the reference being that adapter as loaded) plus a replay of real
genres, stops after ``max_steps`` or ``max_minutes`` and publishes the same files as
:func:`model.train.sft.train`, with a model card of its own.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from model.artifacts import FINGERPRINT, read_card
from model.base import LoadedModel, ModelSpec, load_model
from model.dataset import (
    FINGERPRINT_FILE,
    TRAIN_FILE,
    Example,
    Vote,
    dataset_hash,
    read_examples,
    read_votes,
)
from model.errors import ModelLoadError, TrainingError
from model.events import EventKind, StopReason, TrainEvent
from model.textformat import build_prompt
from model.train._common import (
    LossCurve,
    Progress,
    TrainResult,
    collate,
    encode,
    lr_lambda,
    publish_adapter,
    write_adapter,
)
from model.train.replay import replay_source


@dataclass(frozen=True)
class ServerRunConfig(ModelSpec):
    """A server run: a short fine-tune of a server's adapter on its votes (see
    :func:`server_run`). ``objective`` is ``kto`` or ``unlikelihood`` (:mod:`model.kto`).
    The defaults are the ones ``benchmarks/bench_taste.py`` measured (docs/benchmarks.md)."""

    max_steps: int = 60
    max_minutes: float = 4.5  # wall-clock cap of the whole run, loading included
    replay: int = 2000  # real genres sampled from the dataset for the SFT replay
    vote_batch: int = 32  # voted rows per step, half 👍 and half 👎 when both exist
    replay_batch: int = 8
    learning_rate: float = 4e-3
    warmup_steps: int = 5
    objective: str = "kto"
    beta: float = 0.1
    replay_weight: float = 0.25
    # Only the LoRA weights of the top N decoder layers are tuned (0: all): back-propagation
    # stops below them, so a step costs less. SmolLM2-135M has 30 layers.
    tune_top_layers: int = 15
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def check(self) -> None:
        from model.kto import OBJECTIVES

        if self.objective not in OBJECTIVES:
            raise TrainingError(f"objective must be one of {', '.join(OBJECTIVES)}.")
        if self.max_steps < 1 or self.max_minutes <= 0 or self.vote_batch < 1:
            raise TrainingError("max_steps, max_minutes and vote_batch must be positive.")
        if self.replay < 0 or self.replay_batch < 0:
            raise TrainingError("replay and replay_batch must not be negative.")


def _load_adapter_trainable(cfg: ServerRunConfig, adapter: Path, data_dir: Any) -> LoadedModel:
    """The base model with ``adapter`` loaded trainable (LoRA weights in float32), its
    tokenizer, device and dtype."""
    import torch
    from peft import PeftModel

    if not (adapter / "adapter_config.json").is_file():
        raise ModelLoadError(f"{adapter} is not a LoRA adapter folder.")
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    base, tokenizer, device, dtype = load_model(cfg, data_dir=data_dir)
    try:
        model = PeftModel.from_pretrained(base, str(adapter), is_trainable=True)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelLoadError(f"Cannot apply adapter {adapter}: {first}") from None
    n_layers = int(model.config.num_hidden_layers)
    lowest = max(0, n_layers - cfg.tune_top_layers) if cfg.tune_top_layers > 0 else 0
    for name, param in model.named_parameters():
        if param.requires_grad and _layer_index(name) < lowest:
            param.requires_grad_(False)
        if param.requires_grad:
            param.data = param.data.float()
    return LoadedModel(model, tokenizer, device, dtype)


def _layer_index(name: str) -> int:
    """The decoder layer a parameter belongs to (a large number outside the layers).

    >>> _layer_index("base_model.model.model.layers.12.mlp.up_proj.lora_A.default.weight")
    12
    >>> _layer_index("base_model.model.lm_head.weight") > 1000
    True
    """
    parts = name.split(".")
    for before, index in itertools.pairwise(parts):
        if before == "layers" and index.isdigit():
            return int(index)
    return 1 << 30


class VoteTrainer:
    """The adapter being tuned, the encoded votes with their reference log-probabilities
    (computed once, before any step), the encoded replay sample and the optimiser."""

    def __init__(
        self,
        cfg: ServerRunConfig,
        adapter: Path,
        data_dir: Any,
        votes: Sequence[Vote],
        replay: list[Example],
    ) -> None:
        import torch

        self.cfg = cfg
        self.model, tokenizer, self.device, dtype = _load_adapter_trainable(cfg, adapter, data_dir)
        self.dtype = str(dtype).replace("torch.", "")
        self.pad_id = int(tokenizer.pad_token_id)
        self.votes = encode(tokenizer, [Example(v.name, v.like) for v in votes])
        self.desirable = [bool(v.desirable) for v in votes]
        self.replay = encode(tokenizer, replay)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.reference = self.vote_logps(range(len(self.votes)))
        self.optimizer = torch.optim.AdamW(self.trainable, lr=cfg.learning_rate)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(cfg.warmup_steps, cfg.max_steps)
        )
        self.rng = random.Random(cfg.seed)
        self.n_trainable = sum(p.numel() for p in self.trainable)
        self._up = [i for i, d in enumerate(self.desirable) if d]
        self._down = [i for i, d in enumerate(self.desirable) if not d]

    def vote_logps(self, indices: Any) -> Any:
        """Summed log-probabilities of the voted genres, without gradient (dropout off)."""
        import torch

        from model.kto import sequence_logps

        order = list(indices)
        out = torch.zeros(len(order))
        self.model.eval()
        with torch.inference_mode():
            for start in range(0, len(order), 64):
                chunk = order[start : start + 64]
                ids, mask, labels = collate(self.votes, chunk, self.pad_id)
                logits = self.model(
                    input_ids=ids.to(self.device), attention_mask=mask.to(self.device)
                ).logits
                out[start : start + len(chunk)] = sequence_logps(
                    logits, labels.to(self.device)
                ).cpu()
        self.model.train()
        return out

    def _vote_rows(self) -> list[int]:
        """A batch of voted rows: half 👍 and half 👎 (sampled with replacement) when both
        labels exist, so a server's rare 👍 weigh as much as its many 👎."""
        if not self._up or not self._down:
            pool = self._up or self._down
            return [self.rng.choice(pool) for _ in range(self.cfg.vote_batch)]
        half = max(1, self.cfg.vote_batch // 2)
        return [self.rng.choice(self._up) for _ in range(half)] + [
            self.rng.choice(self._down) for _ in range(self.cfg.vote_batch - half)
        ]

    def step(self, seed: int) -> dict[str, float]:
        """One optimiser step on voted rows and replay rows; the losses it measured."""
        import torch

        torch.manual_seed(seed)
        rows = self._vote_rows()
        replay = (
            [self.rng.randrange(len(self.replay)) for _ in range(self.cfg.replay_batch)]
            if self.replay
            else []
        )
        encoded = [self.votes[i] for i in rows] + [self.replay[i] for i in replay]
        ids, mask, labels = collate(encoded, list(range(len(encoded))), self.pad_id)
        logits = self.model(
            input_ids=ids.to(self.device), attention_mask=mask.to(self.device)
        ).logits
        labels = labels.to(self.device)
        vote = self._vote_loss(logits[: len(rows)], labels[: len(rows)], rows)
        total = vote.loss
        values = {"vote_loss": float(vote.loss.detach())}
        if replay:
            sft = _token_ce(logits[len(rows) :], labels[len(rows) :])
            total = total + self.cfg.replay_weight * sft
            values["replay_loss"] = float(sft.detach())
        total.backward()
        torch.nn.utils.clip_grad_norm_(self.trainable, 1.0)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        values.update(
            {
                k: v
                for k, v in (("reward_up", vote.reward_up), ("reward_down", vote.reward_down))
                if v is not None
            }
        )
        return {"loss": float(total.detach()), **values}

    def _vote_loss(self, logits: Any, labels: Any, rows: list[int]) -> Any:
        import torch

        from model.kto import kto_loss, sequence_logps, unlikelihood_loss

        desirable = torch.tensor([self.desirable[i] for i in rows], device=logits.device)
        if self.cfg.objective == "unlikelihood":
            return unlikelihood_loss(logits, labels, desirable)
        reference = self.reference[rows].to(logits.device)
        return kto_loss(sequence_logps(logits, labels), reference, desirable, beta=self.cfg.beta)


def _token_ce(logits: Any, labels: Any) -> Any:
    """Mean next-token cross-entropy over the unmasked positions (the SFT replay loss)."""
    import torch

    return torch.nn.functional.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]),
        labels[:, 1:].reshape(-1),
        ignore_index=-100,
    )


# Seconds kept free under ``max_minutes`` for writing and publishing the adapter.
SAVE_RESERVE_S = 5.0


def server_run(
    dataset_dir: str | Path,
    votes_file: str | Path,
    from_adapter: str | Path,
    output: str | Path,
    config: ServerRunConfig | None = None,
    *,
    progress: Progress | None = None,
    data_dir: str | Path | None = None,
    name: str | None = None,
) -> TrainResult:
    """Fine-tune ``from_adapter`` on a server's votes and publish it to ``output``.

    A bounded run: at most ``max_steps`` steps and ``max_minutes`` of wall time (loading
    included; the run then ends with :attr:`StopReason.TIME_LIMIT` and publishes what it has).
    Each step mixes voted rows (:mod:`model.kto`, the reference being ``from_adapter`` as it
    was loaded) with a replay sample of the dataset's real genres (cross-entropy), so the
    adapter moves towards the server's taste and keeps writing genre names. Events as
    :func:`model.train.sft.train`: ``start``, one ``step`` per step, ``done``.
    """
    cfg = config or ServerRunConfig()
    cfg.check()
    started = time.perf_counter()
    emit = progress or (lambda event: None)
    dataset, out, source = Path(dataset_dir), Path(output), Path(from_adapter)
    votes = read_votes(votes_file)
    replay = _replay_sample(dataset, cfg)
    trainer = VoteTrainer(cfg, source, data_dir, votes, replay)
    emit(
        TrainEvent(
            EventKind.START,
            step=0,
            total_steps=cfg.max_steps,
            train_examples=len(votes) + len(replay),
            valid_examples=0,
            trainable_params=trainer.n_trainable,
            device=trainer.device,
            dtype=trainer.dtype,
            resumed=False,
            dataset=str(dataset),
        )
    )
    losses: list[list[float]] = []  # [step, loss] pairs
    stop_reason = _server_loop(trainer, losses, emit, started)
    steps = len(losses)
    rewards = _reward_means(trainer)
    wall_s = time.perf_counter() - started
    card = _server_card(cfg, trainer, dataset, source, steps, stop_reason, rewards, name, wall_s)
    tmp = out.with_name(out.name + ".tmp")
    fingerprint = dataset / FINGERPRINT_FILE
    if not fingerprint.is_file():
        fingerprint = source / FINGERPRINT
    # No epochs: the loss curve has no validation marks.
    write_adapter(tmp, trainer.model, card, fingerprint, LossCurve(losses))
    publish_adapter(tmp, out)
    last = losses[-1][1] if losses else None
    result = TrainResult(out, steps, 0, 0, [last] if last is not None else [], [], wall_s)
    emit(
        TrainEvent(
            EventKind.DONE,
            step=steps,
            total_steps=cfg.max_steps,
            loss=round(last, 4) if last is not None else None,
            output=str(out),
            dataset=str(dataset),
            wall_s=round(time.perf_counter() - started, 1),
            eta_s=0,
            stop_reason=stop_reason,
        )
    )
    return result


def _replay_sample(dataset: Path, cfg: ServerRunConfig) -> list[Example]:
    """``cfg.replay`` real genres drawn (seeded) from the dataset's training split."""
    if cfg.replay == 0 or cfg.replay_batch == 0:
        return []
    examples = read_examples(dataset / TRAIN_FILE)
    if not examples:
        raise TrainingError(f"{dataset / TRAIN_FILE} has no examples to replay.")
    rng = random.Random(cfg.seed)
    return rng.sample(examples, min(cfg.replay, len(examples)))


def _server_loop(
    trainer: VoteTrainer, losses: list[list[float]], emit: Progress, started: float
) -> StopReason:
    """The steps of a server run, until ``max_steps`` or the wall-clock cap; each step's
    ``[step, loss]`` is appended to ``losses``."""
    cfg = trainer.cfg
    deadline = started + cfg.max_minutes * 60 - SAVE_RESERVE_S
    last_s = 0.0
    while len(losses) < cfg.max_steps:
        before = time.perf_counter()
        if before + last_s > deadline:
            return StopReason.TIME_LIMIT
        values = trainer.step(seed=cfg.seed + len(losses))
        last_s = time.perf_counter() - before
        step = len(losses) + 1
        losses.append([step, values["loss"]])
        emit(
            TrainEvent(
                EventKind.STEP,
                step=step,
                total_steps=cfg.max_steps,
                loss=round(values["loss"], 4),
                lr=float(trainer.scheduler.get_last_lr()[0]),
                eta_s=round(last_s * (cfg.max_steps - step), 1),
                elapsed_s=round(time.perf_counter() - started, 1),
            )
        )
    return StopReason.COMPLETED


def _reward_means(trainer: VoteTrainer) -> dict[str, float]:
    """Mean change of the voted genres' log-probability since the start, per label."""
    shift = trainer.vote_logps(range(len(trainer.votes))) - trainer.reference
    out = {}
    for label, want in (("up", True), ("down", False)):
        rows = [i for i, d in enumerate(trainer.desirable) if d is want]
        if rows:
            out[label] = round(float(shift[rows].mean()), 4)
    return out


def _server_card(
    cfg: ServerRunConfig,
    trainer: VoteTrainer,
    dataset: Path,
    source: Path,
    steps: int,
    stop_reason: StopReason,
    rewards: dict[str, float],
    name: str | None,
    wall_s: float,
) -> dict[str, Any]:
    """The model card of a server run (``eval`` is filled by ``microgenre eval``)."""
    ups = sum(trainer.desirable)
    return {
        "name": name or f"server-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}",
        "base_model": cfg.base_model,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "format": {"prompt": build_prompt(), "like_prompt": build_prompt("<text>"), "end": "\\n"},
        "from_adapter": {"path": str(source), "name": read_card(source).get("name")},
        "data": {
            "hash": dataset_hash(dataset),
            "votes_up": ups,
            "votes_down": len(trainer.desirable) - ups,
            "replay_examples": len(trainer.replay),
        },
        # "self-replay": the deployment had no real genres (see model.train.replay).
        "replay_source": replay_source(dataset),
        "hyperparameters": cfg.to_dict(),
        "trainable_params": trainer.n_trainable,
        "device": trainer.device,
        "dtype": trainer.dtype,
        "training": {
            "kind": "server_run",
            "steps": steps,
            "stop_reason": str(stop_reason),
            "wall_s": round(wall_s, 1),
            # Mean log-probability change of the voted genres (👍 should rise, 👎 fall).
            "logp_shift": rewards,
        },
        "eval": {},
    }
