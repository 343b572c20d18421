"""``like:`` calls deal first the candidates that share a word with their condition."""

from __future__ import annotations

import random

from model.filters import Fingerprint, theme_words
from model.pipeline import GenrePipeline
from model.protocol import GenerationRequest, GenerationResult

KNOWN = Fingerprint.from_names(["post rock", "jazz", "dub", "pop"])


class PoolBackend:
    """Completions drawn at random from a fixed pool of texts."""

    def __init__(self, pool: list[str]) -> None:
        self.pool = pool
        self.requests: list[GenerationRequest] = []
        self._rng = random.Random(0)

    async def complete(self, request: GenerationRequest) -> GenerationResult:
        self.requests.append(request)
        drawn = [self._rng.choice(self.pool) for _ in range(request.n)]
        return GenerationResult(
            texts=tuple(f" {text}" for text in drawn),
            model="pool",
            extra={"finished": [True] * request.n},
        )


def _pool(on_theme: int, off_theme: int) -> list[str]:
    return [f"dub pop {i}" for i in range(on_theme)] + [f"post jazz {i}" for i in range(off_theme)]


def _on_theme(genre: str) -> bool:
    return bool(theme_words("dubs") & theme_words(genre))


def _pipeline(backend: PoolBackend) -> GenrePipeline:
    return GenrePipeline(backend, KNOWN, share_rounds=False, max_leading_share=1.0)


async def test_a_like_call_delivers_the_candidates_that_share_its_word() -> None:
    backend = PoolBackend(_pool(200, 200))
    outcome = await _pipeline(backend).generate(10, like="Dubs", seed=1)
    assert len(outcome.genres) == 10
    assert all(_on_theme(g) for g in outcome.genres), outcome.genres
    # It chose: acceptable off-theme candidates were sampled and left over.
    assert any(
        verdict == "ok" and not _on_theme(c) and c not in outcome.genres
        for c, verdict in outcome.candidates
    )


async def test_off_theme_candidates_fill_in_only_after_every_on_theme_one() -> None:
    backend = PoolBackend(_pool(20, 400))
    outcome = await _pipeline(backend).generate(30, like="dub", seed=2)
    assert len(outcome.genres) == 30
    assert any(not _on_theme(g) for g in outcome.genres), "too few on-theme to fill the call"
    leftover_on_theme = [
        c
        for c, verdict in outcome.candidates
        if verdict == "ok" and _on_theme(c) and c not in outcome.genres
    ]
    assert leftover_on_theme == []


async def test_like_calls_sample_more_candidates_to_choose_from() -> None:
    plain, liked = PoolBackend(_pool(200, 200)), PoolBackend(_pool(200, 200))
    await _pipeline(plain).generate(40, seed=3)
    await _pipeline(liked).generate(40, like="dub", seed=3)
    assert liked.requests[0].n > 1.5 * plain.requests[0].n


async def test_a_like_without_usable_words_keeps_sampling_order() -> None:
    backend = PoolBackend(_pool(200, 200))
    outcome = await _pipeline(backend).generate(10, like="a", seed=4)
    accepted = [c for c, verdict in outcome.candidates if verdict == "ok"]
    assert outcome.genres == accepted[:10]


async def test_a_call_about_to_give_up_takes_the_candidates_it_held_back() -> None:
    """Off-theme (or out-of-band) acceptable candidates are only held back: a call that would
    otherwise fail short deals them rather than throw them away (`like: delta` fell 1 short
    in eval with 7 acceptable candidates unused)."""
    backend = PoolBackend(_pool(3, 3))
    pipeline = GenrePipeline(
        backend, KNOWN, share_rounds=False, max_leading_share=1.0, max_attempts=1
    )
    outcome = await pipeline.generate(6, like="dub", seed=5)
    assert sorted(outcome.genres) == sorted(_pool(3, 3))
    assert outcome.genres[:3] == [g for g in outcome.genres if _on_theme(g)]  # on-theme first
    assert outcome.stats.get("surplus", 0) == 0
    assert outcome.stats["delivered"] == 6
    # Streamed too, shared round or alone.
    for shared in (False, True):
        pipeline = GenrePipeline(
            PoolBackend(_pool(3, 3)), KNOWN, share_rounds=shared, max_leading_share=1.0,
            max_attempts=1,
        )  # fmt: skip
        streamed = [name async for name in pipeline.stream(6, like="dub")]
        assert sorted(streamed) == sorted(_pool(3, 3))
