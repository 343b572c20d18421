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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from model.dataset import Example, leading_word, related_genres
from model.errors import GenerationError
from model.filters import Fingerprint, near_key, theme_words, validate
from model.pipeline import GenrePipeline
from model.protocol import (
    CompletionBackend,
    GenerationRequest,
    GenerationResult,
    PositionCallback,
)
from model.quality import Probes, Vocabulary, blend_probe, like_probe
from model.textformat import END_MARKER, parse_completion
from scraping.normalize import genre_key

WATCHED_WORD = "musica"
#: Raw novel markovify outputs per seed: re-invention is counted per 1,000 of them.
MARKOV_N = 1000


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
        return GenerationResult(texts=texts, model=self.name, finished=tuple([True] * len(texts)))


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
        finished = result.finished or (True,) * len(result.texts)
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
    pipeline: GenrePipeline,
    likes: Sequence[str],
    per_like: int,
    seed: int,
    related: Mapping[str, frozenset[str]] | None = None,
) -> dict[str, Any]:
    """Share of ``like``-conditioned genres that honour their condition: they share a word
    with the ``like`` text (``share_word``), or with a real genre related to it (``share``;
    ``related`` maps a condition's genre key to the words of its related genres, see
    :func:`related_words`). A condition that gives up short is measured on what it delivered
    and listed in ``short``."""
    hits = related_hits = total = 0
    examples = []
    short: list[list[Any]] = []  # [condition, delivered, asked] of those that gave up
    for i, like in enumerate(likes):
        try:
            outcome = await pipeline.generate(per_like, like=like, seed=seed + i)
        except GenerationError as exc:
            if exc.partial is None:
                raise
            outcome = exc.partial  # measured on what it delivered
            short.append([like, len(outcome.genres), per_like])
        like_words = theme_words(like)
        neighbours = (related or {}).get(genre_key(like), frozenset())
        for g in outcome.genres:
            total += 1
            words = theme_words(g)
            if like_words & words:
                hits += 1
            elif neighbours & words:
                related_hits += 1
        examples.append([like, outcome.genres[:3]])
    return {
        "likes": len(likes),
        "genres": total,
        "failed": len(short),
        "short": short,
        "share_word": hits / max(total, 1),
        "share": (hits + related_hits) / max(total, 1),
        "examples": examples[:8],
    }


def related_words(
    examples: Iterable[Example], records: Iterable[Mapping[str, Any]] = ()
) -> dict[str, frozenset[str]]:
    """Per genre key: the words of the real genres related to it, both ways (a ``like:``
    training example's condition and genre; a record's parents).

    >>> rel = related_words([Example("gamelan degung", "sundanese music")])
    >>> sorted(rel["sundanese music"]), sorted(rel["gamelan degung"])
    (['degung', 'gamelan'], ['music', 'sundanese'])
    """
    pairs: list[tuple[str, str]] = [(e.like, e.genre) for e in examples if e.like]
    for record in records:
        name = str(record.get("display_name") or record.get("key") or "")
        pairs.extend((name, other) for other in related_genres(record))
    out: dict[str, set[str]] = {}
    for a, b in pairs:
        out.setdefault(genre_key(a), set()).update(theme_words(b))
        out.setdefault(genre_key(b), set()).update(theme_words(a))
    return {k: frozenset(v) for k, v in out.items()}


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
    related: Mapping[str, frozenset[str]] | None = None,
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
        table["like"] = await like_honoured(pipeline, likes, per_like, seed + 7, related)
    return table


# ---------------------------------------------------------------- fair evaluation
#
# The generator is measured on the validation split: real genres it never saw. Its pipeline
# then treats them as novel (the fingerprint is every known genre *except* the split's), and
# what counts is how many of them it re-invents, next to a raw markovify chain trained on the
# same training split (novel outputs, no project filters: the chain in its own honest form).


@dataclass(frozen=True)
class HeldOut:
    """The validation split as a target: what the generator may re-invent and what it knew.

    >>> held = HeldOut.build(["post rock", "acid jazz"], [Example("post rock")],
    ...                      [Example("acid jazz"), Example("rock post")])
    >>> sorted(held.targets), held.fingerprint.match("acid jazz"), held.fingerprint.match("rock")
    (['acidjazz'], None, None)
    >>> sorted(held.reinvented(["Jazz Acid", "post rock", "dub"])), held.invented_word_rate(["dub"])
    (['acidjazz'], 1.0)
    """

    fingerprint: Fingerprint  # every known genre except those of the validation split
    targets: frozenset[str]  # near keys of the validation genres that can be re-invented
    train_words: frozenset[str]
    names: tuple[str, ...] = ()  # the held-out genres themselves

    @classmethod
    def build(
        cls, known: Iterable[str], train: Sequence[Example], valid: Sequence[Example]
    ) -> HeldOut:
        """``known``: every real genre (training split or not); ``valid``: the held-out split.

        A validation genre that is a near-copy of a training one ("rock post") is no target:
        the pipeline rightly refuses it, and a chain writing it copied the training set.
        """
        valid_keys = {genre_key(e.genre) for e in valid}
        names = {*known, *(e.genre for e in train)}
        fingerprint = Fingerprint.from_names(n for n in names if genre_key(n) not in valid_keys)
        targets = frozenset(near_key(e.genre) for e in valid if fingerprint.match(e.genre) is None)
        words = frozenset(w for e in train for w in genre_key(e.genre).split())
        return cls(fingerprint, targets, words, tuple(e.genre for e in valid))

    def reinvented(self, names: Iterable[str]) -> set[str]:
        """The targets among ``names`` (by near key: spelling and word order aside)."""
        return {near_key(n) for n in names} & self.targets

    def invented_word_rate(self, names: Sequence[str]) -> float:
        """Share of ``names`` with a word no training genre uses."""
        new = sum(any(w not in self.train_words for w in genre_key(n).split()) for n in names)
        return new / max(len(names), 1)


def markov_raw_novel(
    train_names: Sequence[str],
    held: HeldOut,
    n: int,
    seed: int,
    *,
    state_size: int = 1,
    vocab: Vocabulary | None = None,
) -> dict[str, Any]:
    """The fair baseline: ``n`` outputs of a markovify chain that are not known genres.

    No other filter (well-formedness, near-copies, leading words): the chain as it is.
    ``known_rate`` is its raw known-genre share; ``structure`` (with ``vocab``) the structure
    shares of its novel outputs.
    """
    backend = MarkovBackend(train_names, state_size=state_size, seed=seed)
    novel: list[str] = []
    drawn = known = 0
    while len(novel) < n and drawn < 50 * n:
        for text in backend.sample(min(1000, 2 * (n - len(novel)))):
            drawn += 1
            if not text:
                continue
            if held.fingerprint.match(text) == "known":
                known += 1
            elif len(novel) < n:
                novel.append(text)
    found = held.reinvented(novel)
    return {
        "generator": backend.name,
        "seed": seed,
        "n": len(novel),
        "reinvented": len(found),
        "reinvented_per_1000": per_1000(len(found), len(novel)),
        "known_rate": known / max(drawn, 1),
        "invented_word_rate": held.invented_word_rate(novel),
        "unique": len({near_key(t) for t in novel}) / max(len(novel), 1),
        **({"structure": vocab.shares(novel)} if vocab else {}),
        "reinvented_examples": sorted(found)[:10],
    }


def per_1000(hits: int, n: int) -> float:
    """``hits`` among ``n`` genres, per 1,000.

    >>> per_1000(7, 200), per_1000(0, 0)
    (35.0, 0.0)
    """
    return round(1000 * hits / n, 2) if n else 0.0


def lead_ratio(
    genres: Sequence[str],
    train_names: Sequence[str] = (),
    min_share: float = 0.005,
    *,
    train_counts: Mapping[str, int] | None = None,
) -> float:
    """The largest ratio of a leading word's share in ``genres`` to its share in training,
    over the words that lead at least ``min_share`` of the training genres (the frequent heads:
    "musica", "rap", "deep"…; a rare head's ratio is noise). Training is ``train_names``, or
    ``train_counts`` (genres per leading word, e.g. an adapter's :class:`LeadingPrior`).

    >>> lead_ratio(["deep a"] * 6 + ["x b"] * 4, ["deep c", "x d", "y e", "z f"])
    2.4
    >>> lead_ratio(["deep a"] * 6 + ["x b"] * 4, train_counts={"deep": 1, "x": 3})
    2.4
    """
    train = Counter(train_counts or Counter(leading_word(n) for n in train_names))
    lead = Counter(leading_word(g) for g in genres)
    total, train_total = max(len(genres), 1), max(sum(train.values()), 1)
    ratios = [
        (lead[word] / total) / (count / train_total)
        for word, count in train.items()
        if count / train_total >= min_share
    ]
    return round(max(ratios, default=0.0), 3)


async def delivered_point(
    pipeline: GenrePipeline,
    held: HeldOut,
    train_names: Sequence[str],
    *,
    n: int,
    seed: int,
    weirdness: int | None,
    temperature: float | None = None,
    vocab: Vocabulary | None = None,
) -> dict[str, Any]:
    """``n`` delivered genres at one weirdness level, measured against the held-out split.

    ``known_rate`` is the raw known-genre share (real genres among the raw samples, which the
    novelty filter throws away); ``structure`` (with ``vocab``) the delivered genres' shares.
    """
    t0 = time.perf_counter()
    shortfall = None
    try:
        outcome = await pipeline.generate(
            n, seed=seed, weirdness=weirdness, temperature=temperature
        )
    except GenerationError as exc:
        if exc.partial is None:
            raise
        outcome, shortfall = exc.partial, str(exc)
    seconds = time.perf_counter() - t0
    genres, stats = outcome.genres, outcome.stats
    found = held.reinvented(genres)
    prior = pipeline.leading_prior
    return {
        "generator": outcome.model,
        "seed": seed,
        "weirdness": weirdness,
        "n": len(genres),
        "reinvented": len(found),
        "reinvented_per_1000": per_1000(len(found), len(genres)),
        "known_rate": stats.get("rejected:known", 0) / max(stats.get("raw", 0), 1),
        "invented_word_rate": held.invented_word_rate(genres),
        "well_formed": sum(validate(g) is None for g in genres) / max(len(genres), 1),
        "novel": sum(held.fingerprint.match(g) is None for g in genres) / max(len(genres), 1),
        "unique": len({near_key(g) for g in genres}) / max(len(genres), 1),
        # Against the adapter's own training shares (the prior its pipeline caps by) where it
        # has them: it may have trained on more genres than the rebuilt split.
        "lead_ratio": lead_ratio(genres, train_names, train_counts=prior.counts if prior else None),
        "lead_ratio_split": lead_ratio(genres, train_names),
        "raw": stats.get("raw", 0),
        "seconds": round(seconds, 2),
        "shortfall": shortfall,
        **({"structure": vocab.shares(genres)} if vocab else {}),
        "reinvented_examples": sorted(found)[:10],
        "samples": genres[:10],
    }


def spread(values: Sequence[float]) -> dict[str, float]:
    """Mean, min, max and (population) standard deviation of ``values``.

    >>> spread([1.0, 2.0, 3.0])
    {'mean': 2.0, 'min': 1.0, 'max': 3.0, 'stdev': 0.816}
    """
    mean = sum(values) / max(len(values), 1)
    var = sum((v - mean) ** 2 for v in values) / max(len(values), 1)
    return {
        "mean": round(mean, 3),
        "min": min(values, default=0.0),
        "max": max(values, default=0.0),
        "stdev": round(var**0.5, 3),
    }


def _structure_spread(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    shares = [r["structure"] for r in rows if "structure" in r]
    return {k: spread([float(s[k]) for s in shares]) for k in shares[0]} if shares else {}


def summarise(
    points: Sequence[dict[str, Any]], baselines: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """Per weirdness level over the seeds: each metric's spread, and the re-invention ratio
    (mean over seeds of the model's re-inventions per 1,000 delivered / raw-novel markovify's
    per 1,000 of the same seed)."""
    base_by_seed = {b["seed"]: b.get("reinvented_per_1000", b["reinvented"]) for b in baselines}
    levels: dict[str, Any] = {}
    metrics = (
        "reinvented",
        "known_rate",
        "invented_word_rate",
        "novel",
        "unique",
        "lead_ratio",
        "lead_ratio_split",
    )
    for level in dict.fromkeys(p["weirdness"] for p in points):
        rows = [p for p in points if p["weirdness"] == level]
        ratios = [
            p.get("reinvented_per_1000", p["reinvented"]) / max(base_by_seed.get(p["seed"], 0), 1)
            for p in rows
        ]
        levels[str(level)] = {
            **{m: spread([float(p[m]) for p in rows]) for m in metrics},
            "well_formed": spread([float(p["well_formed"]) for p in rows]),
            "ratio": spread(ratios),
            "reinvented_per_1000": spread([float(p.get("reinvented_per_1000", 0)) for p in rows]),
            "structure": _structure_spread(rows),
            "seconds": spread([float(p["seconds"]) for p in rows]),
        }
    base: dict[str, Any] = {
        m: spread([float(b.get(m, 0)) for b in baselines])
        for m in ("reinvented", "reinvented_per_1000", "known_rate", "invented_word_rate")
    }
    base["structure"] = _structure_spread(baselines)
    return {"levels": levels, "baseline": base}


class ReplayBackend:
    """Replays one stream of scored completions to several pipeline runs (one per weirdness
    level), sampling from ``backend`` only past the end of what it has already seen.

    Every level then chooses from the very same candidates (common random numbers): the
    levels differ by their selection only, and the whole curve costs the sampling of its most
    demanding level. Requests are served in order from the stream whatever their seed, so
    the completions depend on the stream's seed (the first request's) and on the backend.
    """

    def __init__(self, backend: CompletionBackend) -> None:
        self.backend = backend
        self._texts: list[str] = []
        self._finished: list[bool] = []
        self._scores: list[float] = []
        self._cursor = 0
        self._scored = True
        self.model = ""
        self.sampled = 0

    def rewind(self) -> None:
        """The next request starts again at the beginning of the stream."""
        self._cursor = 0

    async def complete(
        self, request: GenerationRequest, *, on_position: PositionCallback | None = None
    ) -> GenerationResult:
        missing = self._cursor + request.n - len(self._texts)
        if missing > 0:
            seed = None if request.seed is None else request.seed + len(self._texts)
            fresh = await self.backend.complete(replace(request, n=missing, seed=seed))
            finished = fresh.finished or (True,) * len(fresh.texts)
            self._texts.extend(fresh.texts)
            self._finished.extend(bool(f) for f in finished)
            self._scored = self._scored and len(fresh.scores) == len(fresh.texts)
            self._scores.extend(fresh.scores or [0.0] * len(fresh.texts))
            self.model, self.sampled = fresh.model, self.sampled + len(fresh.texts)
        part = slice(self._cursor, self._cursor + request.n)
        self._cursor += request.n
        return GenerationResult(
            texts=tuple(self._texts[part]),
            model=self.model,
            finished=tuple(self._finished[part]),
            scores=tuple(self._scores[part]) if self._scored else (),
        )

    def stream(self) -> tuple[list[str], list[bool], list[float]]:
        """Everything sampled so far: texts, finished flags and scores (zeros when unscored)."""
        return list(self._texts), list(self._finished), list(self._scores)


def band_known_rates(
    pipeline: GenrePipeline, replay: ReplayBackend, levels: Sequence[int | None], rerank: float
) -> dict[int | None, float]:
    """Per level: the share of real (training) genres in the level's band of the candidates
    *before* the novelty filter: how much plausibility means "sounds like a real genre".

    The band is what the level would take first (:func:`~model.pipeline.band_order`) from the
    well-formed candidates, known genres included: a ``1 / rerank`` share of them (level None,
    unranked: all of them).
    """
    from model.pipeline import band_order

    texts, finished, scores = replay.stream()
    judged = pipeline.judge(texts, finished, set())
    pool = [
        (j.verdict == "known", s)
        for j, s in zip(judged, scores, strict=True)
        if j.verdict in ("ok", "known")
    ]
    take = max(1, round(len(pool) / max(rerank, 1.0)))
    rates: dict[int | None, float] = {}
    for level in levels:
        if level is None:
            band = list(range(len(pool)))
        else:
            band = band_order([s for _, s in pool], level, 1 / max(rerank, 1.0))[:take]
        rates[level] = sum(pool[i][0] for i in band) / max(len(band), 1)
    return rates


async def fair_evaluation(
    backend: CompletionBackend,
    make_pipeline: Callable[[CompletionBackend], GenrePipeline],
    held: HeldOut,
    train_names: Sequence[str],
    *,
    n: int,
    seeds: Sequence[int],
    levels: Sequence[int | None],
    temperature: float | None = None,
    vocab: Vocabulary | None = None,
    probes: Probes | None = None,
    markov_n: int = MARKOV_N,
) -> dict[str, Any]:
    """The model at each weirdness level and the raw-novel markovify baseline (``markov_n``
    outputs), per seed.

    Level None is the unranked pipeline (sampling order, no re-ranking oversampling).

    ``make_pipeline`` builds the pipeline over a backend; its fingerprint must be
    ``held.fingerprint`` (the validation genres count as novel, so they can be re-invented).
    With ``vocab`` (the training genres), the structure shares of the model's, markovify's and
    the held-out genres themselves; with ``probes``, per seed the ``like:`` probe
    (:func:`~model.quality.like_probe`) and, with pairs, the blend probe.
    """
    points: list[dict[str, Any]] = []
    baselines: list[dict[str, Any]] = []
    likes: list[dict[str, Any]] = []
    blends: list[dict[str, Any]] = []
    started = time.perf_counter()
    rerank = 1.0
    for seed in seeds:
        replay = ReplayBackend(backend)
        for level in levels:
            replay.rewind()
            pipeline = make_pipeline(replay)
            rerank = pipeline.rerank if level is not None else rerank
            points.append(
                await delivered_point(
                    pipeline,
                    held,
                    train_names,
                    n=n,
                    seed=seed,
                    weirdness=level,
                    temperature=temperature,
                    vocab=vocab,
                )
            )
            points[-1]["stream_sampled"] = replay.sampled
        rates = band_known_rates(make_pipeline(replay), replay, levels, rerank)
        for point in points[-len(levels) :]:
            point["band_known_rate"] = rates[point["weirdness"]]
        baselines.append(markov_raw_novel(train_names, held, markov_n, seed, vocab=vocab))
        if probes is not None and probes.likes and vocab is not None:
            likes.append(await like_probe(make_pipeline(backend), vocab, probes, seed))
        if probes is not None and probes.pairs:
            blends.append(await blend_probe(make_pipeline(backend), probes, seed))
    summary = summarise(points, baselines)
    summary["like_probe"] = {
        m: spread([float(r[m]) for r in likes]) for m in ("verbatim", "honoured", "invented_word")
    }
    summary["blend"] = {m: spread([float(r[m]) for r in blends]) for m in ("both", "either")}
    return {
        "n": n,
        "seeds": list(seeds),
        "levels": list(levels),
        "temperature": temperature,
        "rerank": rerank,
        "targets": len(held.targets),
        "markov_n": markov_n,
        "model": points,
        "baseline_raw_novel": baselines,
        "held_out_structure": vocab.shares(held.names) if vocab else {},
        "like_probe": likes,
        "blend": blends,
        "summary": summary,
        "wall_s": round(time.perf_counter() - started, 1),
    }


def plot_weirdness(report: dict[str, Any], path: str | Path) -> Path:
    """Re-invention, known-rate and invented-word rate by weirdness level (mean, min-max over
    the seeds) for the model, the raw-novel markovify baseline as a band; a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["model"]
    levels = [lv for lv in report["levels"] if lv is not None]
    base = report["baseline_raw_novel"]
    panels = [
        ("reinvented", "reinvented", f"validation genres re-invented (of {report['targets']})"),
        ("band_known_rate", "known_rate", "known-genre rate (band before novelty filter)"),
        ("invented_word_rate", "invented_word_rate", "delivered with an invented word"),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, (key, base_key, title) in zip(axes, panels, strict=True):
        values = [[float(r[key]) for r in rows if r["weirdness"] == lv] for lv in levels]
        means = [sum(v) / len(v) for v in values]
        low = [m - min(v) for m, v in zip(means, values, strict=True)]
        high = [max(v) - m for m, v in zip(means, values, strict=True)]
        ax.errorbar(levels, means, yerr=[low, high], marker="o", capsize=3, label="model")
        unranked = [float(r[key]) for r in rows if r["weirdness"] is None]
        if unranked:
            mean_unranked = sum(unranked) / len(unranked)
            ax.axhline(mean_unranked, color="C1", linestyle=":", label="model, unranked")
        b = [float(x[base_key]) for x in base]
        ax.axhline(sum(b) / len(b), color="grey", linestyle="--", label="markovify raw novel")
        ax.axhspan(min(b), max(b), color="grey", alpha=0.15)
        ax.set_xticks(levels)
        ax.set_xlabel("weirdness")
        ax.set_title(title, fontsize=10)
        ax.set_ylim(bottom=0)
    axes[0].legend(fontsize=8)
    fig.suptitle(
        f"n={report['n']} per level, seeds {report['seeds']}, temperature "
        f"{report['temperature']}, rerank x{report['rerank']}",
        fontsize=10,
    )
    fig.tight_layout()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return target
