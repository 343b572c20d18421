"""Batched sampling from the base model plus a LoRA adapter.

:class:`Sampler` turns a list of :class:`~model.protocol.GenerationRequest` into results with as
few decoding passes as possible: all rows of all requests that share a sampling key go into one
left-padded batch (chunked at ``max_batch`` rows) decoded by :meth:`Sampler.decode`, a KV-cache
loop that stops each row as soon as it emits a stop string (every vocabulary token that contains
one counts as an end token), drops finished rows from the batch, and never runs past
``max_tokens`` new tokens. While the default adapter is the only one loaded it is merged into
the base weights (the fastest forward: no LoRA matmuls); once another adapter joins it is
unmerged so several can serve at once (a batch of one adapter runs PEFT's plain path, a batch
that mixes adapters gives each row its own), and merged again when the others are unloaded.

:class:`LocalBackend` is the in-process async :class:`~model.protocol.CompletionBackend` the CLI
uses (the bot uses the worker process instead).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from model.base import ModelSpec, load_model
from model.errors import ModelLoadError
from model.fastpath import FastPath, FastSettings, head_tokens
from model.filters import Fingerprint
from model.protocol import GenerationRequest, GenerationResult, PositionCallback
from model.textformat import parse_completion

log = logging.getLogger(__name__)

# Most stop strings whose token ids are remembered (least recently used are forgotten first).
STOP_CACHE_SIZE = 256
# The file of an adapter folder naming the genres it was trained on (model.filters.Fingerprint).
KNOWN_GENRES = "known_genres.fingerprint"


def _adapter_name(adapter: Path) -> str:
    card = adapter / "model_card.json"
    if card.is_file():
        try:
            name = json.loads(card.read_text()).get("name")
            if isinstance(name, str) and name:
                return name
        except (OSError, ValueError):
            pass
    return adapter.name


DEFAULT_ADAPTER = "default"  # the adapter given to Sampler.load (requests without an adapter)
BASE_ADAPTER = "__base__"  # PEFT's name for "no adapter" in a mixed batch


class Sampler:
    """A loaded model ready to sample; not thread-safe (one batch at a time, see the lock).

    Several LoRA adapters may be loaded (:meth:`load_adapter`); each request names its own
    (``request.adapter``, None: the default). With ``mix_adapters`` rows of different adapters
    share one batch (PEFT's per-row ``adapter_names``); otherwise each adapter gets its own.
    """

    mix_adapters = True
    # Merge the default adapter into the base weights while it is the only one loaded.
    merge_default = True
    # Run each distinct prompt of a batch through the model once, for all its rows (False: once
    # per row, as before; kept for benchmarks/bench_generate.py --compare).
    share_prefill = True

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        name: str,
        *,
        device: str,
        max_batch: int = 256,
        quantize: bool = False,
        head_tokens: list[int] | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.device = device
        self.max_batch = max_batch
        # Token ids containing each stop string: an LRU, so arbitrary client stops stay bounded.
        self._stop_ids: OrderedDict[str, frozenset[int]] = OrderedDict()
        self._vocab_texts: list[tuple[int, str]] | None = None
        self._lock = threading.RLock()
        # The PEFT wrapper once an adapter is loaded, its hooks, and the adapter of each row of
        # the batch being decoded (read by the hooks; empty: the active adapter for all).
        self._peft: Any = None
        self._hooks: list[Any] = []
        self._rows: list[str] = []
        self._merged = False  # whether the default adapter is merged into the base weights
        # The known genres each loaded adapter's rows avoid ending on (``avoid_known``): the
        # adapter's fingerprint file until a request first asks, then the loaded fingerprint.
        self._known: dict[str, Fingerprint | Path] = {}
        # Cheaper steps for the default weights alone (model.fastpath): int8 linear layers
        # and/or the head restricted to these token ids; built while the default serves alone.
        self.quantize = quantize
        self.head_tokens = head_tokens
        self._fast: FastPath | None = None
        config = getattr(model, "config", None)
        # Models whose head does more than a linear layer keep their own forward.
        self._split_head = (
            hasattr(model, "get_decoder")
            and model.get_output_embeddings() is not None
            and not getattr(config, "final_logit_softcapping", None)
            and getattr(config, "logit_scale", None) is None
        )
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        # An empty prompt is conditioned on the start (else end) token, as OpenAI does: a row
        # of zero tokens would fail the whole batch it is part of.
        self._empty_prompt: str = tokenizer.bos_token or tokenizer.eos_token or " "

    @classmethod
    def load(
        cls,
        spec: ModelSpec,
        adapter: str | Path | None = None,
        *,
        data_dir: str | Path | None = None,
        progress: Callable[[str], None] | None = None,
        max_batch: int = 256,
        fast: FastSettings | None = None,
    ) -> Sampler:
        """Load the base model ``spec`` names and, when given, ``adapter`` (a PEFT folder) as
        the default, with the ``fast`` path levers (None: none; the configured ones come from
        ``[model]``, see :class:`~model.fastpath.FastSettings`; the restricted head needs the
        adapter's ``head_tokens.json``), built before this returns."""
        kwargs: dict[str, Any] = {} if progress is None else {"progress": progress}
        model, tokenizer, dev, _ = load_model(spec, data_dir=data_dir, **kwargs)
        base = spec.base_model
        name = Path(base).name if Path(base).exists() else base
        model.eval()
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        fast = fast if fast is not None else FastSettings(quantize=False, restrict_head=False)
        keep = head_tokens(adapter) if fast.restrict_head else None
        sampler = cls(
            model,
            tokenizer,
            name,
            device=dev,
            max_batch=max_batch,
            quantize=fast.quantize,
            head_tokens=keep,
        )
        if adapter is not None:
            sampler.load_adapter(DEFAULT_ADAPTER, adapter)
            sampler.name = f"{name}+{_adapter_name(Path(adapter))}"
        sampler.fast_path()
        return sampler

    def fast_path(self) -> FastPath | None:
        """The fast path of batches of the default weights alone (built on first use); None
        when none is configured, another adapter is loaded, or the head is not a plain linear
        layer."""
        configured = self.quantize or self.head_tokens is not None
        alone = self._merged or self._peft is None
        if not (configured and alone and self._split_head):
            return None
        if self._fast is None:
            self._fast = FastPath(self.model, quantize=self.quantize, keep=self.head_tokens)
        return self._fast

    # ------------------------------------------------------------------ adapters

    @property
    def adapters(self) -> list[str]:
        """Names of the LoRA adapters loaded next to the base model."""
        return [] if self._peft is None else list(self._peft.peft_config)

    @property
    def merged(self) -> bool:
        """Whether the default adapter is merged into the base weights (it is loaded alone)."""
        return self._merged

    def load_adapter(self, name: str, path: str | Path) -> None:
        """Load the PEFT folder ``path`` as adapter ``name``.

        The default adapter loaded alone is merged; any other adapter unmerges it first.

        Raises :class:`ModelLoadError` when ``path`` is no LoRA adapter for this base model.
        """
        adapter_path = Path(path)
        if not (adapter_path / "adapter_config.json").is_file():
            raise ModelLoadError(f"{adapter_path} is not a LoRA adapter folder.")
        from peft import PeftModel

        with self._lock:
            self._unmerge()
            try:
                if self._peft is None:
                    self._peft = PeftModel.from_pretrained(
                        self.model, str(adapter_path), adapter_name=name
                    )
                    self._peft.eval()
                else:
                    self._peft.load_adapter(str(adapter_path), adapter_name=name)
            except (OSError, ValueError, RuntimeError, KeyError) as exc:
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise ModelLoadError(f"Cannot apply adapter {adapter_path}: {first}") from None
            finally:
                if self._peft is not None:
                    self._hook_lora_layers()
                    self._sync_merge()
            with self._lock:
                self._known.pop(name, None)
                if (adapter_path / KNOWN_GENRES).is_file():
                    self._known[name] = adapter_path / KNOWN_GENRES

    def avoid(self, name: str, known: Fingerprint | None) -> None:
        """The known genres that rows of adapter ``name`` asking ``avoid_known`` may not end on
        (None: none). Loading an adapter sets its ``known_genres.fingerprint``."""
        with self._lock:
            if known is None:
                self._known.pop(name, None)
            else:
                self._known[name] = known

    def known_of(self, name: str) -> Fingerprint | None:
        """The known genres the rows of adapter ``name`` avoid (None: none); an adapter's file
        is read on first use, so a sampler nobody asks to avoid never loads one."""
        with self._lock:
            known = self._known.get(name)
            if isinstance(known, Path):
                known = _known_genres(known)
                self.avoid(name, known)
            return known

    def unload_adapter(self, name: str) -> None:
        """Free adapter ``name`` (a no-op when it is not loaded)."""
        with self._lock:
            self._known.pop(name, None)
            if self._peft is not None and name in self._peft.peft_config:
                self._unmerge()
                if len(self._peft.peft_config) == 1:
                    self._peft.base_model.delete_adapter(name)
                else:
                    self._peft.delete_adapter(name)
                self._sync_merge()

    def _sync_merge(self) -> None:
        """Merge the default adapter while it is the only one loaded (else keep it unmerged).

        Merged, a forward costs what the base model costs; PEFT keeps the LoRA weights, so
        :meth:`_unmerge` subtracts them again when a second adapter needs the base weights.
        """
        alone = self.merge_default and self.adapters == [DEFAULT_ADAPTER]
        if alone and not self._merged:
            self._peft.set_adapter(DEFAULT_ADAPTER)
            self._peft.merge_adapter([DEFAULT_ADAPTER])
            self._merged = True
        elif not alone:
            self._unmerge()

    def _unmerge(self) -> None:
        self._fast = None  # built from the merged weights (or the base alone): stale now
        if self._merged:
            self._peft.unmerge_adapter()
            self._merged = False

    def _hook_lora_layers(self) -> None:
        """Give every LoRA layer the per-row adapter names of the running batch.

        PEFT applies ``adapter_names`` per row when a layer's forward receives it; a hook
        registered once (instead of PEFT's per-call context manager) reads the current names.
        """
        import torch
        from peft.tuners.lora import LoraLayer

        for handle in self._hooks:
            handle.remove()
        self._hooks = [
            module.register_forward_pre_hook(self._inject_rows, with_kwargs=True)
            for module in self._peft.modules()
            if isinstance(module, LoraLayer) and isinstance(module, torch.nn.Module)
        ]

    def _inject_rows(
        self, _module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Any, dict[str, Any]]:
        if self._rows:
            kwargs["adapter_names"] = self._rows
        return args, kwargs

    def adapter_of(self, request: GenerationRequest) -> str:
        """The loaded adapter that serves ``request`` (its name, the default, or the base)."""
        return request.adapter.name if request.adapter is not None else self.adapter_of_default()

    @property
    def stop_cache_size(self) -> int:
        """How many stop strings have their token ids cached (at most ``STOP_CACHE_SIZE``)."""
        return len(self._stop_ids)

    def _ids_containing(self, stop: str) -> frozenset[int]:
        cached = self._stop_ids.get(stop)
        if cached is not None:
            self._stop_ids.move_to_end(stop)
            return cached
        if self._vocab_texts is None:
            # Decoded once: a new stop string is then a substring scan, not a vocabulary decode.
            vocab = self.tokenizer.get_vocab().values()
            self._vocab_texts = [(int(i), self.tokenizer.decode([i])) for i in vocab]
        ids = frozenset(i for i, text in self._vocab_texts if stop in text)
        self._stop_ids[stop] = ids
        while len(self._stop_ids) > STOP_CACHE_SIZE:
            self._stop_ids.popitem(last=False)
        return ids

    def stop_token_ids(self, stop: tuple[str, ...]) -> list[int]:
        """Ids of every token whose text contains a stop string, plus the EOS token."""
        ids: set[int] = set()
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        for text in dict.fromkeys(s for s in stop if s):
            ids |= self._ids_containing(text)
        return sorted(ids)

    def complete_batch(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        """Complete every request; requests sharing a sampling key share one batch."""
        groups: dict[tuple[Any, ...], list[int]] = defaultdict(list)
        for index, request in enumerate(requests):
            key: tuple[Any, ...] = request.sampling_key()
            if not self.mix_adapters:
                key = (*key, self.adapter_of(request))
            groups[key].append(index)
        results: list[GenerationResult | None] = [None] * len(requests)
        with self._lock:
            for indices in groups.values():
                for index, result in zip(
                    indices, self._run_group([requests[i] for i in indices]), strict=True
                ):
                    results[index] = result
        return [r for r in results if r is not None]

    def _last_logits(
        self, input_ids: Any, attention_mask: Any, position_ids: Any, cache: Any, fast: Any = None
    ) -> tuple[Any, Any]:
        """Float logits of the last position, shape (batch, vocab), and the updated cache.

        With ``fast`` (a :class:`~model.fastpath.FastPath`), its decoder and head serve, and the
        logits are over its head's tokens. The decoder runs without its head and the head is
        applied to the contiguous last hidden state: letting the causal-LM class slice it
        (``logits_to_keep``) sends a strided tensor into the tied head, which PyTorch turns
        into a batched matmul over a copied (batch x hidden x vocab) weight — measured 30x
        slower on CPU.
        """
        kwargs: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "position_ids": position_ids,
            "use_cache": True,
        }
        if cache is not None:
            kwargs["cache"] = cache
        if fast is not None:
            logits, out = fast.logits(kwargs)
            return logits, _cache_of(out)
        if self._split_head:
            out = self.model.get_decoder()(**kwargs)
            hidden = out.last_hidden_state[:, -1, :].contiguous()
            logits = self.model.get_output_embeddings()(hidden)
        else:
            out = self.model(**kwargs, logits_to_keep=1)
            logits = out.logits[:, -1, :]
        return logits.float(), _cache_of(out)

    def decode(
        self,
        input_ids: Any,
        attention_mask: Any,
        *,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        stop_ids: list[int],
        adapters: list[str] | None = None,
        logprobs: list[list[float]] | None = None,
        avoid: list[Fingerprint | None] | None = None,
        rows: Any = None,
    ) -> list[list[int]]:
        """Sample up to ``max_new_tokens`` per row of a left-padded batch; rows stop at a stop id.

        ``rows`` (a long tensor), when given, maps each row to the prompt it continues:
        ``input_ids`` then hold each distinct prompt once, the prompts are run through the model
        once, and their cache and last logits are copied to their rows (the rows of a prompt
        share its prefill). ``adapters`` and ``avoid`` are per row, and each prompt's rows share
        one adapter.

        ``adapters`` names the loaded adapter of each row (None: every row uses the default).
        ``logprobs``, when given (an empty list), receives per row the log-probability of each
        sampled token under the untempered distribution, read off the logits the loop computes
        anyway (no extra forward pass): how plausible the completion is to the model itself,
        whatever temperature and top-p it was sampled with.

        A plain KV-cache loop: the logits of the last position only, nucleus sampling within
        the ``TOP_K`` most likely tokens (a partial sort instead of sorting the vocabulary), and
        finished rows dropped from the batch and its cache so the cost shrinks as rows end.

        ``avoid`` gives per row the known genres it may not end on (None: any end): while the
        row's text is one, its stop tokens are masked for the pick (the log-probabilities stay
        the model's own), so it goes on to a longer name instead of one the filter would drop.
        """
        import torch

        batch = int(input_ids.shape[0]) if rows is None else int(rows.shape[0])
        stop = torch.tensor(stop_ids, dtype=torch.long, device=input_ids.device)
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        tokens: list[list[int]] = [[] for _ in range(batch)]
        if logprobs is not None:
            logprobs[:] = [[] for _ in range(batch)]
        active = torch.arange(batch, device=input_ids.device)
        row_adapters = adapters or [self.adapter_of_default()] * batch
        prompt_adapters = row_adapters
        if rows is not None:
            prompt_adapters = [self.adapter_of_default()] * int(input_ids.shape[0])
            for row, prompt in enumerate(rows.tolist()):
                prompt_adapters[prompt] = row_adapters[row]
        self._select_rows(prompt_adapters)
        fast = None if self._rows else self.fast_path()
        if fast is not None and not fast.covers(stop_ids):
            fast = None  # a stop token the restricted head cannot emit: the full head serves
        guard = None  # built only when a row has known genres to avoid (not by default)
        if avoid is not None and any(known is not None for known in avoid):
            guard = _EndGuard(self.tokenizer, avoid, stop_ids, fast)
        with torch.inference_mode():
            logits, cache = self._last_logits(input_ids, attention_mask, position_ids, None, fast)
            # The first step's logits are each prompt's, ranked once (`shared` maps rows to
            # them); the rows of a prompt then sample apart.
            shared = None
            if rows is not None:  # each prompt's cache, copied to its rows
                cache.batch_select_indices(rows)
                attention_mask, position_ids = attention_mask[rows], position_ids[rows]
                if guard is None:
                    shared = rows
                else:
                    logits = logits[rows]
                self._select_rows(row_adapters)
            for step in range(max_new_tokens):
                pickable = logits if guard is None else guard.mask(logits, active, tokens)
                picked_at = _pick(pickable, temperature, top_p, shared)  # in the head's ids
                chosen = picked_at if fast is None else fast.to_vocab(picked_at)
                for row, token in zip(active.tolist(), chosen.tolist(), strict=True):
                    tokens[row].append(token)
                if logprobs is not None:
                    of = (
                        torch.arange(len(picked_at), device=logits.device)
                        if shared is None
                        else shared
                    )
                    norm = torch.logsumexp(logits, dim=-1)[of]
                    step_lp = (logits[of, picked_at] - norm).tolist()
                    for row, value in zip(active.tolist(), step_lp, strict=True):
                        logprobs[row].append(value)
                done = torch.isin(chosen, stop)
                if step == max_new_tokens - 1 or bool(done.all()):
                    break
                if bool(done.any()):
                    keep = (~done).nonzero().squeeze(1)
                    cache.batch_select_indices(keep)
                    active = active[keep]
                    if self._rows:
                        self._rows = [self._rows[i] for i in keep.tolist()]
                    chosen = chosen[keep]
                    attention_mask = attention_mask[keep]
                    position_ids = position_ids[keep]
                attention_mask = torch.cat(
                    [attention_mask, attention_mask.new_ones((attention_mask.shape[0], 1))], dim=1
                )
                position_ids = position_ids[:, -1:] + 1
                logits, cache = self._last_logits(
                    chosen[:, None], attention_mask, position_ids, cache, fast
                )
                shared = None
        return tokens

    def adapter_of_default(self) -> str:
        return DEFAULT_ADAPTER if DEFAULT_ADAPTER in self.adapters else BASE_ADAPTER

    def _select_rows(self, adapters: list[str]) -> None:
        """Route each row through its adapter: one active adapter, or PEFT's mixed batch."""
        if self._merged:  # only the default is loaded, and it is in the weights
            unknown = set(adapters) - {DEFAULT_ADAPTER}
            if unknown:
                raise ModelLoadError(f"The adapter {sorted(unknown)[0]} is not loaded.")
            self._rows = []
        elif self._peft is None:
            self._rows = []
        elif len(set(adapters)) == 1 and adapters[0] != BASE_ADAPTER:
            self._peft.set_adapter(adapters[0])
            self._rows = []  # the plain (faster) path of the active adapter
        else:
            self._rows = list(adapters)

    def _run_group(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        import torch

        first = requests[0]
        seeds = [r.seed for r in requests if r.seed is not None]
        if seeds:
            # torch takes 0 .. 2**64 - 1; a seed outside must not fail the batch.
            torch.manual_seed(seeds[0] % 2**64)
        rows = [
            (i, r.prompt or self._empty_prompt)
            for i, r in enumerate(requests)
            for _ in range(max(r.n, 0))
        ]
        row_adapters = [self.adapter_of(r) for r in requests for _ in range(max(r.n, 0))]
        row_avoid = [
            self.known_of(self.adapter_of(r)) if r.avoid_known else None
            for r in requests
            for _ in range(max(r.n, 0))
        ]
        stop_ids = self.stop_token_ids(first.stop)
        texts: list[list[str]] = [[] for _ in requests]
        finished: list[list[bool]] = [[] for _ in requests]
        scores: list[list[float]] = [[] for _ in requests]
        prompt_tokens = [0] * len(requests)
        completion_tokens = [0] * len(requests)
        start = time.perf_counter()
        for chunk_start in range(0, len(rows), self.max_batch):
            chunk = rows[chunk_start : chunk_start + self.max_batch]
            chunk_adapters = row_adapters[chunk_start : chunk_start + self.max_batch]
            # Each distinct (prompt, adapter) is run through the model once (see decode).
            distinct: dict[tuple[str, str, int], int] = {}
            row_prompt = [
                distinct.setdefault((p, adapter, 0 if self.share_prefill else i), len(distinct))
                for i, ((_, p), adapter) in enumerate(zip(chunk, chunk_adapters, strict=True))
            ]
            enc = self.tokenizer(
                [p for p, _, _ in distinct],
                return_tensors="pt",
                padding=True,
                add_special_tokens=False,
            ).to(self.device)
            prompt_lengths = enc["attention_mask"].sum(-1).tolist()
            token_lps: list[list[float]] = []
            new = self.decode(
                enc["input_ids"],
                enc["attention_mask"],
                rows=torch.tensor(row_prompt, dtype=torch.long, device=self.device),
                max_new_tokens=first.max_tokens,
                temperature=first.temperature,
                top_p=first.top_p,
                stop_ids=stop_ids,
                adapters=chunk_adapters,
                logprobs=token_lps,
                avoid=row_avoid[chunk_start : chunk_start + self.max_batch],
            )
            stop_set = set(stop_ids)
            for (req_index, _), token_ids, prompt, lps in zip(
                chunk, new, row_prompt, token_lps, strict=True
            ):
                used = []
                done = False
                for tok in token_ids:
                    used.append(tok)
                    if tok in stop_set:
                        done = True
                        break
                text = self.tokenizer.decode(used, skip_special_tokens=True)
                cut = _cut(text, first.stop)
                texts[req_index].append(cut if cut is not None else text)
                finished[req_index].append(done or cut is not None)
                prompt_tokens[req_index] += int(prompt_lengths[prompt])
                completion_tokens[req_index] += len(used)
                scores[req_index].append(mean_logprob(lps[: len(used)]))
        elapsed = time.perf_counter() - start
        return [
            GenerationResult(
                texts=tuple(texts[i]),
                model=self.name,
                prompt_tokens=prompt_tokens[i],
                completion_tokens=completion_tokens[i],
                generate_s=elapsed,
                finished=tuple(finished[i]),
                scores=tuple(scores[i]),
            )
            for i in range(len(requests))
        ]


TOP_K = 1000


def _known_genres(path: Path) -> Fingerprint | None:
    """An adapter's known genres from ``path`` (None when it cannot be read: logged)."""
    try:
        return Fingerprint.load(path)
    except (OSError, ValueError) as exc:
        log.warning("ignoring %s: %s", path, exc)
        return None


class _EndGuard:
    """Masks the stop tokens of the rows whose text so far is a known genre (``avoid``)."""

    def __init__(
        self,
        tokenizer: Any,
        avoid: list[Fingerprint | None],
        stop_ids: list[int],
        fast: FastPath | None,
    ) -> None:
        import torch

        self.tokenizer = tokenizer
        self.avoid = avoid
        # The stop tokens in the head's index space (the restricted head keeps every one).
        columns = stop_ids if fast is None else fast.positions(stop_ids)
        self.columns = torch.tensor(columns, dtype=torch.long)
        self._verdicts: dict[tuple[int, ...], bool] = {}

    def known(self, row: int, tokens: list[int]) -> bool:
        fingerprint = self.avoid[row]
        if fingerprint is None or not tokens:
            return False
        key = tuple(tokens)
        verdict = self._verdicts.get(key)
        if verdict is None:
            name = parse_completion(self.tokenizer.decode(tokens), require_end=False)
            verdict = name is not None and fingerprint.match(name) is not None
            self._verdicts[key] = verdict
        return verdict

    def mask(self, logits: Any, active: Any, tokens: list[list[int]]) -> Any:
        """``logits`` with the stop tokens of the rows that spell a known genre at -inf."""
        rows = [i for i, row in enumerate(active.tolist()) if self.known(row, tokens[row])]
        if not rows:
            return logits
        import torch

        masked = logits.clone()
        index = torch.tensor(rows, dtype=torch.long, device=logits.device)
        masked[index[:, None], self.columns.to(logits.device)[None, :]] = float("-inf")
        return masked


def mean_logprob(logprobs: list[float]) -> float:
    """A completion's length-normalised log-likelihood: the mean of its tokens' log-probs.

    The mean, not the sum, so a long name is not penalised for its length alone.

    >>> mean_logprob([-1.0, -3.0]), mean_logprob([])
    (-2.0, -inf)
    """
    return sum(logprobs) / len(logprobs) if logprobs else float("-inf")


def _cache_of(output: Any) -> Any:
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def _pick(logits: Any, temperature: float, top_p: float, rows: Any = None) -> Any:
    """One token per row: greedy at temperature 0, else nucleus sampling within the top-k.

    With ``rows``, ``logits`` holds each prompt's logits once and ``rows`` maps each row to
    its prompt: the ranking runs once per prompt, and each row draws its own token.
    """
    import torch

    if temperature <= 0:
        best = logits.argmax(dim=-1)
        return best if rows is None else best[rows]
    values, indices = torch.topk(logits / temperature, min(TOP_K, logits.shape[-1]), dim=-1)
    if rows is not None:
        values, indices = values[rows], indices[rows]
    probs = torch.softmax(values, dim=-1)
    if top_p < 1.0:
        # Values are sorted: drop every token after the cumulative mass passed top_p.
        outside = probs.cumsum(dim=-1) - probs > top_p
        probs = probs.masked_fill(outside, 0.0)
    choice = torch.multinomial(probs, 1)
    return indices.gather(-1, choice).squeeze(-1)


def _cut(text: str, stop: tuple[str, ...]) -> str | None:
    """``text`` before the earliest stop string, or None when it holds none."""
    positions = [text.find(s) for s in stop if s and s in text]
    return text[: min(positions)] if positions else None


class LocalBackend:
    """An in-process :class:`~model.protocol.CompletionBackend` over a :class:`Sampler`.

    Generation runs in a thread (``asyncio.to_thread``) so the event loop stays free.
    """

    def __init__(self, sampler: Sampler) -> None:
        self.sampler = sampler

    @property
    def name(self) -> str:
        return self.sampler.name

    async def complete(
        self, request: GenerationRequest, *, on_position: PositionCallback | None = None
    ) -> GenerationResult:
        """Generate in a thread; there is no queue, so ``on_position`` is never called."""
        started = time.perf_counter()
        (result,) = await asyncio.to_thread(self.sampler.complete_batch, [request])
        queue_s = max(0.0, time.perf_counter() - started - result.generate_s)
        return GenerationResult(
            texts=result.texts,
            model=result.model,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            queue_s=queue_s,
            generate_s=result.generate_s,
            finished=result.finished,
            extra=result.extra,
            scores=result.scores,
        )
