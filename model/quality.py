"""What a genre is made of, and whether conditioned genres are relatives (issues 19 and 22).

* **Structure** (:class:`Vocabulary`): each genre is classified against the training genres as
  *seen modifier + known genre* (its leading words start some training genre and the rest is a
  training genre: "turkish progressive metal"), *invented word* (a word no training genre uses)
  or *other* (any other new combination of seen words).
* **``like:`` verbatim**: a ``like:`` genre that is the condition verbatim plus seen words
  ("greek hyperpop" for hyperpop) copies rather than finds a relative.
* **Blends**: a ``like: a | b`` genre shares a word, or a word of a real related genre, with
  ``a``, with ``b``, with both.

:func:`like_probe` and :func:`blend_probe` run a pipeline over fixed conditions and parent
pairs and report these shares.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from model.errors import GenerationError
from model.filters import theme_words
from model.outcome import GenerationOutcome
from model.pipeline import GenrePipeline
from model.splits import HeldGenre
from model.textformat import blend_like
from scraping.normalize import genre_key

MODIFIER_KNOWN = "modifier_known"
INVENTED_WORD = "invented_word"
OTHER = "other"
STRUCTURES = (MODIFIER_KNOWN, OTHER, INVENTED_WORD)
#: The issue's twelve ``like:`` conditions.
LIKE_PROBES = (
    "shoegaze",
    "sea shanty",
    "vaporwave",
    "drum and bass",
    "polka",
    "black metal",
    "city pop",
    "grime",
    "bossa",
    "dark ambient",
    "hyperpop",
    "zydeco",
)
#: The ``/genre new`` default weirdness (``bot.cogs.generation.DEFAULT_WEIRDNESS``), at which the
#: ``like:`` and blend probes run.
PROBE_WEIRDNESS = 2


class Vocabulary:
    """The training genres as the structure classification sees them.

    >>> v = Vocabulary(["turkish pop", "progressive metal", "metal"])
    >>> v.classify("turkish progressive metal"), v.classify("turkish metal pop")
    ('modifier_known', 'other')
    >>> v.classify("turkish zorp"), v.classify("metal progressive")
    ('invented_word', 'other')
    >>> v.verbatim("turkish metal", "metal"), v.verbatim("metallic pop", "metal")
    (True, False)
    """

    def __init__(self, genres: Iterable[str]) -> None:
        self.known: set[str] = set()
        self.prefixes: set[tuple[str, ...]] = set()
        self.words: set[str] = set()
        for genre in genres:
            words = genre_key(genre).split()
            if not words:
                continue
            self.known.add(" ".join(words))
            self.words.update(words)
            self.prefixes.update(tuple(words[:i]) for i in range(1, len(words)))

    def classify(self, name: str) -> str:
        words = genre_key(name).split()
        if any(w not in self.words for w in words):
            return INVENTED_WORD
        for i in range(1, len(words)):
            if tuple(words[:i]) in self.prefixes and " ".join(words[i:]) in self.known:
                return MODIFIER_KNOWN
        return OTHER

    def shares(self, names: Sequence[str]) -> dict[str, float]:
        """The share of ``names`` in each structure class."""
        counts = dict.fromkeys(STRUCTURES, 0)
        for name in names:
            counts[self.classify(name)] += 1
        return {k: round(c / max(len(names), 1), 4) for k, c in counts.items()}

    def verbatim(self, name: str, condition: str) -> bool:
        """Whether ``name`` is ``condition`` word for word plus words training genres use."""
        words, cond = genre_key(name).split(), genre_key(condition).split()
        for i in range(len(words) - len(cond) + 1):
            if cond and words[i : i + len(cond)] == cond:
                rest = words[:i] + words[i + len(cond) :]
                return all(w in self.words for w in rest)
        return False


def relative(name: str, parent: str, related: Mapping[str, frozenset[str]]) -> bool:
    """Whether ``name`` shares a word with ``parent`` or with a real genre related to it
    (``related``: :func:`model.evaluate.related_words`).

    >>> relative("nu gaze", "shoegaze", {}), relative("blackgaze", "shoegaze", {})
    (False, False)
    >>> relative("gaze revival", "shoegaze", {"shoegaze": frozenset({"gaze"})})
    True
    """
    words = theme_words(name)
    return bool(words & (theme_words(parent) | related.get(genre_key(parent), frozenset())))


def blend_pairs(held: Sequence[HeldGenre], limit: int) -> list[tuple[str, str, str]]:
    """``(a, b, child)`` for up to ``limit`` held-out genres with two or more parents (their
    first two), the same ones whatever the sampling seed.

    >>> blend_pairs([HeldGenre("blackgaze", ("black metal", "shoegaze")), HeldGenre("x")], 5)
    [('black metal', 'shoegaze', 'blackgaze')]
    """
    pairs = [(g.parents[0], g.parents[1], g.genre) for g in held if len(g.parents) >= 2]
    if len(pairs) > limit:
        pairs = sorted(random.Random(0).sample(pairs, limit), key=lambda p: p[2])
    return pairs


@dataclass(frozen=True)
class Probes:
    """The conditioned probes of the held-out evaluation: ``like:`` conditions and blend pairs,
    at the ``/genre new`` default weirdness."""

    likes: Sequence[str] = LIKE_PROBES
    per_like: int = 10
    pairs: Sequence[tuple[str, str, str]] = ()
    per_pair: int = 3
    weirdness: int | None = PROBE_WEIRDNESS
    related: Mapping[str, frozenset[str]] | None = None


async def _generate(
    pipeline: GenrePipeline, n: int, like: str, seed: int, weirdness: int | None
) -> GenerationOutcome:
    try:
        return await pipeline.generate(n, like=like, seed=seed, weirdness=weirdness)
    except GenerationError as exc:
        if exc.partial is None:
            raise
        return exc.partial  # measured on what it delivered


async def like_probe(
    pipeline: GenrePipeline, vocab: Vocabulary, probes: Probes, seed: int
) -> dict[str, Any]:
    """Over the probe conditions: the share of genres that are the condition verbatim plus
    seen words, that honour it (a word shared with it or a related genre), that invent a word."""
    related = probes.related or {}
    genres: list[tuple[str, str]] = []
    for i, like in enumerate(probes.likes):
        outcome = await _generate(pipeline, probes.per_like, like, seed + i, probes.weirdness)
        genres.extend((like, g) for g in outcome.genres)
    total = max(len(genres), 1)
    return {
        "seed": seed,
        "conditions": len(probes.likes),
        "genres": len(genres),
        "verbatim": round(sum(vocab.verbatim(g, c) for c, g in genres) / total, 4),
        "honoured": round(sum(relative(g, c, related) for c, g in genres) / total, 4),
        "invented_word": round(
            sum(vocab.classify(g) == INVENTED_WORD for _, g in genres) / total, 4
        ),
        "examples": [[c, g] for c, g in genres[:: max(1, probes.per_like)]][:12],
    }


async def blend_probe(pipeline: GenrePipeline, probes: Probes, seed: int) -> dict[str, Any]:
    """Over the blend pairs: the share of ``like: a | b`` genres related to both parents and
    to at least one (see :func:`relative`)."""
    related = probes.related or {}
    both = either = total = 0
    examples: list[list[str]] = []
    for i, (a, b, child) in enumerate(probes.pairs):
        outcome = await _generate(
            pipeline, probes.per_pair, blend_like(a, b), seed + i, probes.weirdness
        )
        for genre in outcome.genres:
            hits = relative(genre, a, related) + relative(genre, b, related)
            total, both, either = total + 1, both + (hits == 2), either + (hits > 0)
        if outcome.genres and len(examples) < 10:
            examples.append([a, b, child, outcome.genres[0]])
    return {
        "seed": seed,
        "pairs": len(probes.pairs),
        "genres": total,
        "both": round(both / max(total, 1), 4),
        "either": round(either / max(total, 1), 4),
        "examples": examples,
    }
