"""Re-ranking by the backend's plausibility scores, and the weirdness bands."""

from __future__ import annotations

import itertools
import random
from statistics import mean

import pytest

from model.filters import Fingerprint
from model.pipeline import RERANK, GenrePipeline, band_order
from model.protocol import GenerationRequest, GenerationResult

KNOWN = Fingerprint.from_names(["post rock", "jazz", "dub", "pop"])


class ScoredBackend:
    """Completions drawn from a pool of (text, score) pairs, scored as a sampler would."""

    def __init__(self, pool: list[tuple[str, float]], *, scored: bool = True) -> None:
        self.pool = pool
        self.scored = scored
        self.requests: list[GenerationRequest] = []
        self._rng = random.Random(0)

    async def complete(self, request: GenerationRequest) -> GenerationResult:
        self.requests.append(request)
        drawn = [self._rng.choice(self.pool) for _ in range(request.n)]
        return GenerationResult(
            texts=tuple(f" {text}" for text, _ in drawn),
            model="scored",
            finished=tuple([True] * request.n),
            scores=tuple(score for _, score in drawn) if self.scored else (),
        )


def _pool(size: int = 400) -> list[tuple[str, float]]:
    """Novel genres whose score says their rank: "dub 7" is the 8th most plausible."""
    return [(f"deep dub {i}", -0.01 * i) for i in range(size)]


SCORE = {text: score for text, score in _pool()}


def _scores(genres: list[str]) -> list[float]:
    return [SCORE[g] for g in genres]


async def test_level_1_delivers_the_most_plausible_acceptable_candidates() -> None:
    # The most plausible completion of all is a real genre: it must never be delivered.
    backend = ScoredBackend([("post rock", 0.0), *_pool(40)])
    pipeline = GenrePipeline(backend, KNOWN, share_rounds=False, max_leading_share=1.0)
    outcome = await pipeline.generate(5, weirdness=1, seed=1)
    assert len(backend.requests) == 1 and "post rock" not in outcome.genres
    # Every delivered genre is at least as plausible as every acceptable one left over.
    leftover = [
        c for c, verdict in outcome.candidates if verdict == "ok" and c not in outcome.genres
    ]
    assert leftover, "the call must have chosen among more candidates than it delivered"
    assert min(_scores(outcome.genres)) >= max(_scores(leftover))


async def test_level_5_delivers_the_least_plausible_acceptable_candidates() -> None:
    backend = ScoredBackend(_pool(60))
    pipeline = GenrePipeline(backend, KNOWN, share_rounds=False, max_leading_share=1.0)
    outcome = await pipeline.generate(5, weirdness=5, seed=1)
    leftover = [
        c for c, verdict in outcome.candidates if verdict == "ok" and c not in outcome.genres
    ]
    assert leftover
    assert max(_scores(outcome.genres)) <= min(_scores(leftover))


async def test_plausibility_falls_monotonically_from_level_1_to_5() -> None:
    means = []
    for level in range(1, 6):
        pipeline = GenrePipeline(
            ScoredBackend(_pool()), KNOWN, share_rounds=False, max_leading_share=1.0
        )
        outcome = await pipeline.generate(30, weirdness=level, seed=7)
        assert len(outcome.genres) == 30
        means.append(mean(_scores(outcome.genres)))
    assert means == sorted(means, reverse=True)
    assert len(set(means)) == 5


async def test_a_weirdness_level_samples_rerank_times_more_to_choose_from() -> None:
    plain, ranked = ScoredBackend(_pool()), ScoredBackend(_pool())
    await GenrePipeline(plain, KNOWN, share_rounds=False, max_leading_share=1.0).generate(20)
    await GenrePipeline(ranked, KNOWN, share_rounds=False, max_leading_share=1.0).generate(
        20, weirdness=3
    )
    assert ranked.requests[0].n >= RERANK * (plain.requests[0].n - 2)


@pytest.mark.parametrize("level", [1, 3, 5])
async def test_a_capped_request_still_deals_only_its_band(level: int) -> None:
    # max_request keeps each request far below RERANK times the need: every round must still
    # deal only the level's share of its acceptable candidates, so the levels stay apart.
    pipeline = GenrePipeline(
        ScoredBackend(_pool()), KNOWN, share_rounds=False, max_leading_share=1.0, max_request=60
    )
    outcome = await pipeline.generate(100, weirdness=level, seed=3)
    assert len(outcome.genres) == 100
    assert outcome.stats["surplus"] >= (RERANK - 1.5) * 100
    # Scores are uniform over [-4, 0): the thirds average about -0.7, -2 and -3.3.
    average = mean(_scores(outcome.genres))
    assert {1: average > -1.5, 3: -2.5 < average < -1.5, 5: average < -2.5}[level]


async def test_a_ranked_call_with_many_rejects_does_not_count_as_collapsed() -> None:
    # Most candidates are real genres; the acceptable ones are dealt first, so the rejected
    # come last in the dealing order: the collapse rule must still see the sampling order.
    backend = ScoredBackend(_pool(400) + [("post rock", 0.0)] * 1200)
    pipeline = GenrePipeline(
        backend, KNOWN, share_rounds=False, max_leading_share=1.0, collapse_window=50
    )
    outcome = await pipeline.generate(40, weirdness=1, seed=5)
    assert len(outcome.genres) == 40


async def test_without_scores_candidates_are_dealt_in_sampling_order() -> None:
    backend = ScoredBackend(_pool(), scored=False)
    pipeline = GenrePipeline(backend, KNOWN, share_rounds=False, max_leading_share=1.0)
    outcome = await pipeline.generate(5, weirdness=1, seed=2)
    acceptable = [c for c, verdict in outcome.candidates if verdict == "ok"]
    assert outcome.genres == acceptable[:5]


async def test_calls_of_different_levels_do_not_share_a_round() -> None:
    import asyncio

    backend = ScoredBackend(_pool())
    pipeline = GenrePipeline(backend, KNOWN, max_leading_share=1.0)
    low, high = await asyncio.gather(
        pipeline.generate(10, weirdness=1), pipeline.generate(10, weirdness=5)
    )
    assert len(backend.requests) == 2
    assert mean(_scores(low.genres)) > mean(_scores(high.genres))


@pytest.mark.parametrize("size", [1, 2, 5, 17])
@pytest.mark.parametrize("level", range(1, 6))
def test_band_order_is_a_permutation(size: int, level: int) -> None:
    rng = random.Random(size)
    scores = [rng.random() for _ in range(size)]
    assert len(set(scores)) == size  # distinct scores: the order is really decided by them
    assert sorted(band_order(scores, level)) == list(range(size))


def test_neighbouring_levels_share_at_most_half_of_their_band() -> None:
    """Band centres are spread evenly (levels 1 and 5 at the ends): with the band 1 / RERANK
    wide, no two neighbouring levels take mostly the same candidates (they did: levels 1 and
    2, and 4 and 5, shared three quarters of their band, so 4 and 5 re-invented alike)."""
    scores = [random.Random(9).random() for _ in range(300)]
    take = round(len(scores) / RERANK)
    bands = [set(band_order(scores, level)[:take]) for level in range(1, 6)]
    for low, high in itertools.pairwise(bands):
        assert len(low & high) <= take / 2 + 1
    ranked = sorted(range(len(scores)), key=lambda i: -scores[i])
    assert bands[0] == set(ranked[:take]) and bands[4] == set(ranked[-take:])
