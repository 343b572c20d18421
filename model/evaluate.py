"""Evaluation of a generator: raw and delivered quality, re-invention of held-out genres, skew.

The same table is computed for the model and for a markovify baseline trained on the same
training split (:class:`MarkovBackend` is a :class:`~model.protocol.CompletionBackend`, so both
go through the very same :class:`~model.pipeline.GenrePipeline`).

* raw: N completions before any filter: the share that is well-formed, unique (distinct near
  keys among the well-formed) and novel (not a known genre nor a near-copy of one);
* delivered: N genres out of the pipeline, re-checked independently: well-formed, unique, novel;
* reinvented: distinct validation-split genres (held out from training) that appear among the
  raw outputs: a model that learned what genres look like re-invents real ones it never saw;
* leading words: the top leading words of the delivered genres and their shares next to the
  training shares, with the "musica …" share called out (the earlier project's skew).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from model.dataset import Example, leading_word
from model.errors import GenerationError
from model.filters import Fingerprint, _singular, near_key, validate
from model.pipeline import GenrePipeline
from model.protocol import (
    CompletionBackend,
    GenerationRequest,
    GenerationResult,
    PositionCallback,
)
from model.textformat import END_MARKER, parse_completion
from scraping.normalize import genre_key

WATCHED_WORD = "musica"


class MarkovBackend:
    """A markovify word chain over the training genres, as a completion backend."""

    def __init__(self, genres: Iterable[str], *, state_size: int = 1, seed: int = 0) -> None:
        import markovify

        self.name = f"markovify-{state_size}"
        self._model = markovify.NewlineText(
            "\n".join(genres), state_size=state_size, retain_original=False
        )
        self._rng = random.Random(seed)

    def sample(self, n: int) -> list[str]:
        # markovify draws from the global `random` module: seed it from our own generator.
        state = random.getstate()
        random.seed(self._rng.random())
        try:
            out = []
            for _ in range(n):
                text = self._model.make_sentence(tries=20, test_output=False)
                out.append(text or "")
            return out
        finally:
            random.setstate(state)

    async def complete(
        self, request: GenerationRequest, *, on_position: PositionCallback | None = None
    ) -> GenerationResult:
        texts = tuple(" " + t + END_MARKER for t in self.sample(request.n))
        return GenerationResult(
            texts=texts, model=self.name, extra={"finished": [True] * len(texts)}
        )


async def raw_sample(backend: CompletionBackend, prompt: str, n: int, **kw: Any) -> list[str]:
    """``n`` raw completions (chunks of 256), unfinished ones marked by a missing end marker."""
    out: list[str] = []
    seed = kw.pop("seed", None)
    while len(out) < n:
        size = min(256, n - len(out))
        chunk_seed = None if seed is None else seed + len(out)  # a fresh seed per chunk
        result = await backend.complete(
            GenerationRequest(prompt=prompt, n=size, stop=(END_MARKER,), seed=chunk_seed, **kw)
        )
        finished = result.extra.get("finished") or [True] * len(result.texts)
        out.extend(
            t + END_MARKER if done and not t.endswith(END_MARKER) else t
            for t, done in zip(result.texts, finished, strict=True)
        )
    return out[:n]


def raw_metrics(
    texts: Sequence[str],
    fingerprint: Fingerprint,
    valid_near: set[str],
    train_words: set[str] | None = None,
) -> dict[str, Any]:
    names = [parse_completion(t) for t in texts]
    well = [n for n in names if n is not None and validate(n) is None]
    keys = [near_key(n) for n in well]
    novel = [n for n in well if fingerprint.match(n) is None]
    reinvented = {k for k in keys if k in valid_near}
    total = max(len(texts), 1)
    return {
        "n": len(texts),
        "well_formed": len(well) / total,
        "unique": len(set(keys)) / max(len(well), 1),
        "novel": len(novel) / max(len(well), 1),
        "known": sum(fingerprint.match(n) == "known" for n in well) / max(len(well), 1),
        "reinvented_valid": len(reinvented),
        # Novel genres with a word no training genre uses (invented words, often junk).
        "novel_with_new_word": (
            sum(any(w not in train_words for w in genre_key(n).split()) for n in novel)
            / max(len(novel), 1)
            if train_words is not None
            else None
        ),
        "reinvented_examples": sorted(reinvented)[:10],
    }


def delivered_metrics(
    genres: Sequence[str], fingerprint: Fingerprint, train_names: Sequence[str]
) -> dict[str, Any]:
    total = max(len(genres), 1)
    train_lead = Counter(leading_word(n) for n in train_names)
    lead = Counter(leading_word(g) for g in genres)
    train_total = max(sum(train_lead.values()), 1)
    return {
        "n": len(genres),
        "well_formed": sum(validate(g) is None for g in genres) / total,
        "unique": len({near_key(g) for g in genres}) / total,
        "novel": sum(fingerprint.match(g) is None for g in genres) / total,
        "top_leading": [
            [word, round(count / total, 4), round(train_lead[word] / train_total, 4)]
            for word, count in lead.most_common(10)
        ],
        "musica_share": lead[WATCHED_WORD] / total,
        "musica_train_share": train_lead[WATCHED_WORD] / train_total,
    }


async def like_honoured(
    pipeline: GenrePipeline, likes: Sequence[str], per_like: int, seed: int
) -> dict[str, Any]:
    """Share of ``like``-conditioned genres that share a word with the ``like`` text."""
    hits = total = 0
    examples = []
    failed = 0
    for i, like in enumerate(likes):
        try:
            outcome = await pipeline.generate(per_like, like=like, seed=seed + i)
        except GenerationError:
            failed += 1
            continue
        like_words = {w for w in near_key_words(like)}
        for g in outcome.genres:
            total += 1
            if like_words & set(near_key_words(g)):
                hits += 1
        examples.append([like, outcome.genres[:3]])
    return {
        "likes": len(likes),
        "genres": total,
        "share_word": hits / max(total, 1),
        "examples": examples[:8],
    }


def near_key_words(name: str) -> list[str]:
    return [_singular(w) for w in genre_key(name).split() if len(w) > 2]


async def evaluate_backend(
    backend: CompletionBackend,
    pipeline: GenrePipeline,
    *,
    n: int,
    fingerprint: Fingerprint,
    train: Sequence[Example],
    valid: Sequence[Example],
    seed: int = 0,
    temperature: float = 1.0,
    top_p: float = 0.95,
    likes: Sequence[str] = (),
    per_like: int = 10,
) -> dict[str, Any]:
    """The evaluation table for one backend (see the module docstring)."""
    valid_near = {near_key(e.genre) for e in valid}
    train_names = [e.genre for e in train]
    t0 = time.perf_counter()
    texts = await raw_sample(
        backend, "genre:", n, temperature=temperature, top_p=top_p, max_tokens=16, seed=seed
    )
    raw_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    shortfall = None
    try:
        outcome = await pipeline.generate(n, seed=seed + 1, temperature=temperature)
    except GenerationError as exc:
        # A weak model (a barely trained adapter) delivers fewer: measure what it delivered.
        if exc.partial is None:
            raise
        outcome, shortfall = exc.partial, str(exc)
    delivered_s = time.perf_counter() - t0
    table: dict[str, Any] = {
        "model": outcome.model,
        "raw": raw_metrics(
            texts,
            fingerprint,
            valid_near,
            {w for name in train_names for w in genre_key(name).split()},
        ),
        "delivered": delivered_metrics(outcome.genres, fingerprint, train_names),
        "pipeline_stats": outcome.stats,
        "shortfall": shortfall,
        "raw_s": round(raw_s, 2),
        "delivered_s": round(delivered_s, 2),
        "delivered_per_s": round(len(outcome.genres) / max(delivered_s, 1e-9), 2),
        "samples": outcome.genres[:15],
    }
    if likes:
        table["like"] = await like_honoured(pipeline, likes, per_like, seed + 7)
    return table
