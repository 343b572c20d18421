"""Cheaper decoding steps for the default weights: int8 linear layers and a restricted head.

The decoder runs near the compute ceiling of the CPU, so a step gets faster only with fewer or
cheaper FLOPs. :class:`FastPath` serves every batch that runs the default weights alone (the
merged default adapter, or a base model without adapters):

* ``quantize``: a plain copy of the merged model whose decoder's ``Linear`` layers are int8,
  each token of their input scaled on its own (:class:`~model.int8.Int8Linear`; CPU only). It
  runs the decoding steps; the prompts (one prefill per distinct prompt) and the output head
  stay in full precision, and so does the model that serves the batches of other adapters.
* ``keep``: the output head restricted to the token ids genre names use (the adapter's
  ``head_tokens.json``, see :func:`head_tokens`): a (k x hidden) slice of the tied head taken
  once, instead of the 49,152-token head that is about a fifth of each step's FLOPs. Sampling,
  top-p and the scores then run over those k tokens (a token outside them has probability 0).

The sampler picks tokens in the head's own index space and maps them back with :meth:`to_vocab`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# The adapter file listing the token ids the restricted head keeps.
HEAD_TOKENS = "head_tokens.json"


@dataclass(frozen=True)
class FastSettings:
    """Which fast-path levers a sampler uses (``[model] quantize`` and ``restrict_head``).

    The bot's worker, ``generate`` and ``serve`` load their sampler with the configured
    settings (docs/benchmarks.md has the measurements).
    """

    # int8 linear layers in the decoding steps (CPU only; ignored on a GPU); docs/benchmarks.md.
    quantize: bool = False
    # The output head restricted to the adapter's head_tokens.json (when it has one).
    restrict_head: bool = True

    def as_dict(self) -> dict[str, bool]:
        """For the worker's health report.

        >>> FastSettings().as_dict()
        {'quantize': False, 'restrict_head': True}
        """
        return {"quantize": self.quantize, "restrict_head": self.restrict_head}


def head_tokens(adapter: str | Path | None) -> list[int] | None:
    """The token ids an adapter's ``head_tokens.json`` lists (None: no file, a full head).

    A file that cannot be read is logged and ignored: the full head is always correct.
    """
    if adapter is None:
        return None
    path = Path(adapter) / HEAD_TOKENS
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        ids = sorted({int(i) for i in data["tokens"]})
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring %s (%s): the full output head is used", path, exc)
        return None
    return ids or None


def write_head_tokens(adapter: str | Path, tokens: Iterable[int], meta: dict[str, Any]) -> Path:
    """Write ``head_tokens.json`` into ``adapter`` (sorted distinct ids, and ``meta``)."""
    path = Path(adapter) / HEAD_TOKENS
    ids = sorted({int(i) for i in tokens})
    path.write_text(json.dumps({**meta, "count": len(ids), "tokens": ids}) + "\n", "utf-8")
    return path


def plain_copy(model: Any) -> Any:
    """A plain copy of ``model`` (a causal LM) with the current weights, LoRA wrappers removed,
    in the model's dtype.

    PEFT wraps each adapted layer (``q_proj.base_layer.weight``, ``q_proj.lora_A...``); with the
    adapter merged, the base layers hold the merged weights, which are all the copy needs.
    """
    state = {
        key.replace(".base_layer.", "."): value
        for key, value in model.state_dict().items()
        if "lora_" not in key
    }
    copy = type(model)(model.config)
    copy.load_state_dict(state, strict=False)
    weight = model.get_input_embeddings().weight
    copy.to(device=weight.device, dtype=weight.dtype)
    return copy.eval()


class FastPath:
    """The decoder and output head that serve batches of the default weights alone."""

    def __init__(self, model: Any, *, quantize: bool, keep: list[int] | None) -> None:
        import torch

        head = model.get_output_embeddings()
        device = head.weight.device
        self.quantized = quantize and device.type == "cpu"
        weight = head.weight.detach()
        self.keep = None if keep is None else torch.tensor(keep, dtype=torch.long, device=device)
        if self.keep is not None:
            weight = weight[self.keep]
        linear = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False, device=device)
        linear.weight = torch.nn.Parameter(weight.clone(), requires_grad=False)
        self.prompt_decoder = model.get_decoder()
        if self.quantized:
            from model.int8 import quantise_linears

            decoder = quantise_linears(plain_copy(model).get_decoder())
        else:
            decoder = self.prompt_decoder
        self.decoder = decoder
        self.head = linear

    @property
    def size(self) -> int:
        """How many tokens the head scores."""
        return int(self.keep.shape[0]) if self.keep is not None else -1

    def covers(self, stop_ids: list[int]) -> bool:
        """Whether every stop token is one the head can emit (else a full head must serve)."""
        if self.keep is None:
            return True
        kept = set(self.keep.tolist())
        return all(i in kept for i in stop_ids)

    def positions(self, ids: list[int]) -> list[int]:
        """Where the vocabulary ids ``ids`` sit in the head's index space (those it keeps)."""
        if self.keep is None:
            return list(ids)
        where = {token: at for at, token in enumerate(self.keep.tolist())}
        return [where[i] for i in ids if i in where]

    def logits(self, kwargs: dict[str, Any]) -> tuple[Any, Any]:
        """Float logits over the head's tokens of the last position, and the output.

        A call without a cache runs prompts: on the full-precision decoder, so a prompt's cache
        is exact and only the steps after it run in int8 (when quantised).
        """
        decoder = self.decoder if "cache" in kwargs else self.prompt_decoder
        out = decoder(**kwargs)
        hidden = out.last_hidden_state[:, -1, :].contiguous()
        return self.head(hidden).float(), out

    def to_vocab(self, chosen: Any) -> Any:
        """Vocabulary ids of tokens picked in the head's index space."""
        return chosen if self.keep is None else self.keep[chosen]


def collect_head_tokens(
    sampler: Any,
    names: Iterable[str],
    *,
    samples: int = 2048,
    temperature: float = 1.0,
    seed: int = 0,
) -> list[int]:
    """The token ids a restricted head keeps for ``sampler``'s default weights.

    Every token of the completions of the training format for ``names`` (" <name>⏎" after
    "genre:"), every stop token of the end marker (and EOS), and, as a margin, every token the
    model itself emits in ``samples`` completions at ``temperature`` (above the default, so
    rarer sub-words count too) with the full head: ``sampler`` is loaded without a fast path
    (``FastSettings(quantize=False, restrict_head=False)``).
    """
    import torch

    from model.textformat import END_MARKER, GENRE_TAG, build_prompt, format_example

    tok = sampler.tokenizer
    stop = sampler.stop_token_ids((END_MARKER,))
    keep = set(stop)
    prefix = len(tok(GENRE_TAG, add_special_tokens=False)["input_ids"])
    for name in names:
        ids = tok(format_example(name), add_special_tokens=False)["input_ids"]
        keep.update(ids[prefix:])
    if sampler.fast_path() is not None:
        raise ValueError("collect the head tokens with a sampler loaded without a fast path")
    torch.manual_seed(seed)
    for start in range(0, samples, sampler.max_batch):
        rows = min(sampler.max_batch, samples - start)
        enc = tok([build_prompt()] * rows, return_tensors="pt", add_special_tokens=False)
        for ids in sampler.decode(
            enc["input_ids"].to(sampler.device),
            enc["attention_mask"].to(sampler.device),
            max_new_tokens=16,
            temperature=temperature,
            top_p=1.0,
            stop_ids=stop,
        ):
            keep.update(ids)
    return sorted(keep)
