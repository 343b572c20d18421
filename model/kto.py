"""Learning from 👍/👎 votes: a KTO objective, and an unlikelihood alternative.

Votes are unpaired: a server says "more like this" or "less like this" about single genres,
never "this one rather than that one". KTO (Ethayarajh et al., 2024, "KTO: Model Alignment as
Prospect Theoretic Optimization") learns from exactly such labels. With the policy's summed
log-probability of a completion ``log π(y|x)`` and the frozen reference's ``log π_ref(y|x)``
(the adapter the run started from, computed once before training), the implied reward is
``r = log π(y|x) − log π_ref(y|x)``, and each example is pushed away from a reference point
``z0``, an estimate of ``KL(π ‖ π_ref)`` (clamped at 0, no gradient):

* 👍: ``loss = w_up · (1 − σ(β · (r − z0)))`` — raise the genre above the reference point;
* 👎: ``loss = w_down · (1 − σ(β · (z0 − r)))`` — lower it below.

The sigmoid saturates, so a genre already far on the right side stops pulling: the model
moves towards the taste without collapsing onto the voted names. Every prompt here is the same
(``genre:``, or one ``like:``), so ``z0`` is the batch mean of ``r`` over all voted examples
(the paper's mismatched-pair estimate degenerates to this when prompts coincide).

The alternative, :func:`unlikelihood_loss`, is plain cross-entropy on 👍 genres plus
``−log(1 − p)`` on every token of 👎 ones (Welleck et al., 2019). Both take logits and labels
with ``-100`` on masked positions, as the training loop builds them; torch is imported inside.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

OBJECTIVES = ("kto", "unlikelihood")


@dataclass(frozen=True)
class VoteLoss:
    """One batch's vote loss and what it measured (floats, for progress events and cards)."""

    loss: Any  # a scalar tensor with a gradient
    reward_up: float | None = None  # mean r of the 👍 rows (KTO only)
    reward_down: float | None = None
    kl: float | None = None  # z0


def sequence_logps(logits: Any, labels: Any) -> Any:
    """Summed log-probability of each row's label tokens (``-100`` positions skipped).

    ``logits[:, t]`` predicts ``labels[:, t + 1]``, as a causal LM's output does.

    >>> import torch
    >>> logits = torch.zeros(1, 3, 4)  # uniform over 4 tokens
    >>> labels = torch.tensor([[-100, 1, 2]])
    >>> round(float(sequence_logps(logits, labels)[0]), 4) == round(2 * -1.3863, 4)
    True
    """
    import torch

    logits = logits[:, :-1].float()
    target = labels[:, 1:]
    mask = target != -100
    picked = torch.gather(
        torch.log_softmax(logits, dim=-1), 2, target.clamp(min=0).unsqueeze(-1)
    ).squeeze(-1)
    return (picked * mask).sum(dim=-1)


def kto_loss(
    policy: Any,
    reference: Any,
    desirable: Any,
    *,
    beta: float = 0.1,
    weight_up: float = 1.0,
    weight_down: float = 1.0,
) -> VoteLoss:
    """The KTO loss of a batch (see the module docstring), averaged over its rows.

    ``policy`` and ``reference`` are summed log-probabilities per row, ``desirable`` a bool
    tensor (👍). Before any step the policy equals the reference and every row costs 0.5:

    >>> import torch
    >>> logps = torch.tensor([-3.0, -5.0])
    >>> out = kto_loss(logps.clone().requires_grad_(), logps, torch.tensor([True, False]))
    >>> round(float(out.loss), 3), out.reward_up, out.reward_down, out.kl
    (0.5, 0.0, 0.0, 0.0)
    """
    import torch

    rewards = policy - reference
    kl = rewards.detach().mean().clamp(min=0)
    up = torch.sigmoid(beta * (rewards - kl))
    down = torch.sigmoid(beta * (kl - rewards))
    losses = torch.where(desirable, weight_up * (1 - up), weight_down * (1 - down))
    detached = rewards.detach()
    return VoteLoss(
        loss=losses.mean(),
        reward_up=float(detached[desirable].mean()) if bool(desirable.any()) else None,
        reward_down=float(detached[~desirable].mean()) if bool((~desirable).any()) else None,
        kl=float(kl),
    )


def unlikelihood_loss(logits: Any, labels: Any, desirable: Any) -> VoteLoss:
    """Cross-entropy on the 👍 rows plus ``−log(1 − p(token))`` on the 👎 rows' tokens,
    averaged over all their tokens.

    >>> import torch
    >>> logits = torch.zeros(2, 3, 4)
    >>> labels = torch.tensor([[-100, 1, 2], [-100, 3, -100]])
    >>> # (2 · −log 0.25 + −log 0.75) / 3
    >>> round(float(unlikelihood_loss(logits, labels, torch.tensor([True, False])).loss), 4)
    1.0201
    """
    import torch

    logits = logits[:, :-1].float()
    target = labels[:, 1:]
    mask = target != -100
    logp = torch.gather(
        torch.log_softmax(logits, dim=-1), 2, target.clamp(min=0).unsqueeze(-1)
    ).squeeze(-1)
    # log(1 - p) computed stably from log p (p < 1 by a hair keeps it finite).
    unlikely = torch.log1p(-logp.exp().clamp(max=1 - 1e-6))
    per_token = torch.where(desirable.unsqueeze(-1), -logp, -unlikely)
    return VoteLoss(loss=(per_token * mask).sum() / mask.sum().clamp(min=1))
