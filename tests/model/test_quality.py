"""Structure classes, `like:` verbatim and blend rates, with scripted backends."""

from __future__ import annotations

from typing import Any

import pytest

from model.filters import Fingerprint, Moderator
from model.pipeline import GenrePipeline
from model.protocol import GenerationRequest, GenerationResult
from model.quality import (
    INVENTED_WORD,
    MODIFIER_KNOWN,
    OTHER,
    PROBE_WEIRDNESS,
    Probes,
    Vocabulary,
    blend_like,
    blend_pairs,
    blend_probe,
    like_probe,
)
from model.splits import HeldGenre

TRAIN = ["turkish pop", "progressive metal", "black metal", "shoegaze", "city pop", "dream pop"]
VOCAB = Vocabulary(TRAIN)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("turkish progressive metal", MODIFIER_KNOWN),  # "turkish" starts a genre; the rest is one
        ("dream city pop", MODIFIER_KNOWN),
        ("turkish shoegaze", MODIFIER_KNOWN),
        ("metal turkish", OTHER),  # seen words, no such template
        ("pop shoegaze", OTHER),  # "pop" starts no training genre
        ("turkish glorp", INVENTED_WORD),
        ("blackgaze", INVENTED_WORD),
    ],
)
def test_structure_classes(name: str, kind: str) -> None:
    assert VOCAB.classify(name) == kind


def test_structure_shares_add_up() -> None:
    shares = VOCAB.shares(["turkish shoegaze", "metal turkish", "blackgaze", "zorp"])
    assert shares == {MODIFIER_KNOWN: 0.25, OTHER: 0.25, INVENTED_WORD: 0.5}


@pytest.mark.parametrize(
    ("name", "condition", "verbatim"),
    [
        ("turkish shoegaze", "shoegaze", True),
        ("dream black metal", "black metal", True),
        ("black dream metal", "black metal", False),  # not word for word
        ("shoegaze glorp", "shoegaze", False),  # an invented word: not only seen words
        ("blackgaze", "shoegaze", False),
    ],
)
def test_like_verbatim(name: str, condition: str, verbatim: bool) -> None:
    assert VOCAB.verbatim(name, condition) is verbatim


class ByPrompt:
    """Answers each prompt with its own scripted completions (cycled), scored in order."""

    def __init__(self, script: dict[str, list[str]]) -> None:
        self.script = script
        self.prompts: list[str] = []

    async def complete(self, request: GenerationRequest, **_: Any) -> GenerationResult:
        self.prompts.append(request.prompt)
        texts = self.script[request.prompt]
        out = tuple(f" {texts[i % len(texts)]}\n" for i in range(request.n))
        scores = tuple(-float(i % len(texts)) for i in range(request.n))
        return GenerationResult(out, "scripted", finished=(True,) * request.n, scores=scores)


# Words the pipeline accepts as genre words (its fingerprint), beyond the training genres.
GROUNDED = [
    f"{w} x" for w in ("nu", "gaze", "moss", "jazz", "tokyo", "revival", "glorpwave", "glorp")
]


def _pipeline(backend: ByPrompt) -> GenrePipeline:
    fingerprint = Fingerprint.from_names(TRAIN + GROUNDED)
    return GenrePipeline(backend, fingerprint, Moderator(), max_attempts=2, like_choose=1)


async def test_like_probe_counts_verbatim_copies_and_relatives() -> None:
    backend = ByPrompt(
        {
            "like: shoegaze\ngenre:": [
                "turkish shoegaze",
                "nu gaze",
                "dream shoegaze",
                "glorpwave",
            ],
            "like: city pop\ngenre:": ["dream city pop", "tokyo pop", "city glorp", "moss jazz"],
        }
    )
    report = await like_probe(
        _pipeline(backend), VOCAB, Probes(likes=["shoegaze", "city pop"], per_like=4), seed=1
    )
    assert report["genres"] == 8
    # turkish shoegaze, dream shoegaze, dream city pop: verbatim + seen words.
    assert report["verbatim"] == pytest.approx(3 / 8)
    # + "tokyo pop" and "city glorp" share a word with "city pop".
    assert report["honoured"] == pytest.approx(5 / 8)
    assert report["invented_word"] == pytest.approx(5 / 8)  # nu, glorp, tokyo, moss


async def test_blend_probe_scores_both_and_either_parent() -> None:
    prompt = f"like: {blend_like('black metal', 'shoegaze')}\ngenre:"
    backend = ByPrompt({prompt: ["black gaze", "metal revival", "moss jazz", "shoegaze metal"]})
    related = {"shoegaze": frozenset({"gaze"})}  # a real related genre of shoegaze uses "gaze"
    probes = Probes(pairs=[("black metal", "shoegaze", "blackgaze")], per_pair=4, related=related)
    report = await blend_probe(_pipeline(backend), probes, seed=1)
    assert backend.prompts[0] == prompt
    assert report["genres"] == 4
    assert report["both"] == pytest.approx(2 / 4)  # black gaze, shoegaze metal
    assert report["either"] == pytest.approx(3 / 4)  # + metal revival


def test_blend_pairs_are_the_multi_parent_genres_whatever_the_seed() -> None:
    held = [HeldGenre(f"g{i}", ("a", "b", "c") if i % 2 else ("a",)) for i in range(40)]
    pairs = blend_pairs(held, 5)
    assert len(pairs) == 5 and pairs == blend_pairs(held, 5)
    assert all((a, b) == ("a", "b") for a, b, _ in pairs)


def test_the_probe_weirdness_is_the_genre_new_default() -> None:
    from bot.cogs.generation import DEFAULT_WEIRDNESS

    assert PROBE_WEIRDNESS == DEFAULT_WEIRDNESS
