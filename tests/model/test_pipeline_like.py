"""``like:`` calls deal first the candidates that share a word with their condition."""

from __future__ import annotations

from model.filters import Fingerprint, theme_words
from model.pipeline import RERANK, GenrePipeline, _dealing_order, _Judged
from tests.model.test_pipeline_ranking import ScoredBackend

KNOWN = Fingerprint.from_names(["post rock", "jazz", "dub", "pop"])


def pool_backend(pool: list[str]) -> ScoredBackend:
    """Completions drawn at random from a fixed pool of texts, unscored."""
    return ScoredBackend([(text, 0.0) for text in pool], scored=False)


def _pool(on_theme: int, off_theme: int) -> list[str]:
    return [f"dub pop {i}" for i in range(on_theme)] + [f"post jazz {i}" for i in range(off_theme)]


def _on_theme(genre: str) -> bool:
    return bool(theme_words("dubs") & theme_words(genre))


def _pipeline(backend: ScoredBackend) -> GenrePipeline:
    return GenrePipeline(backend, KNOWN, share_rounds=False, max_leading_share=1.0)


async def test_a_like_call_delivers_the_candidates_that_share_its_word() -> None:
    backend = pool_backend(_pool(200, 200))
    outcome = await _pipeline(backend).generate(10, like="Dubs", seed=1)
    assert len(outcome.genres) == 10
    assert all(_on_theme(g) for g in outcome.genres), outcome.genres
    # It chose: acceptable off-theme candidates were sampled and left over.
    assert any(
        verdict == "ok" and not _on_theme(c) and c not in outcome.genres
        for c, verdict in outcome.candidates
    )


async def test_off_theme_candidates_fill_in_only_after_every_on_theme_one() -> None:
    backend = pool_backend(_pool(20, 400))
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
    plain, liked = pool_backend(_pool(200, 200)), pool_backend(_pool(200, 200))
    await _pipeline(plain).generate(40, seed=3)
    await _pipeline(liked).generate(40, like="dub", seed=3)
    assert liked.requests[0].n > 1.5 * plain.requests[0].n


async def test_a_like_without_usable_words_keeps_sampling_order() -> None:
    backend = pool_backend(_pool(200, 200))
    outcome = await _pipeline(backend).generate(10, like="a", seed=4)
    accepted = [c for c, verdict in outcome.candidates if verdict == "ok"]
    assert outcome.genres == accepted[:10]


async def test_a_call_about_to_give_up_takes_the_candidates_it_held_back() -> None:
    """Off-theme (or out-of-band) acceptable candidates are only held back: a call that would
    otherwise fail short deals them rather than throw them away (`like: delta` fell 1 short
    in eval with 7 acceptable candidates unused)."""
    backend = pool_backend(_pool(3, 3))
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
            pool_backend(_pool(3, 3)), KNOWN, share_rounds=shared, max_leading_share=1.0,
            max_attempts=1,
        )  # fmt: skip
        streamed = [name async for name in pipeline.stream(6, like="dub")]
        assert sorted(streamed) == sorted(_pool(3, 3))


async def test_a_blend_deals_the_candidates_of_both_parents_before_those_of_one() -> None:
    """``like: a | b`` asks for a child of both: a candidate sharing a word with each parent
    comes before one that shares a word with only one (both were merely "on theme")."""
    both = [f"dub polka {i}" for i in range(20)]
    one = [f"dub wave {i}" for i in range(200)] + [f"polka wave {i}" for i in range(200)]
    outcome = await _pipeline(pool_backend(both + one)).generate(30, like="dub | polka", seed=5)
    assert len(outcome.genres) == 30
    assert any("wave" in g for g in outcome.genres), "too few of both parents to fill the call"
    left_over = [
        c
        for c, verdict in outcome.candidates
        if verdict == "ok" and c.startswith("dub polka") and c not in outcome.genres
    ]
    assert left_over == []
    assert any(g.startswith("dub polka") for g in outcome.genres)


def _judged(on_theme: int, off_theme: int) -> list[_Judged]:
    return [_Judged(f" {g}", g, "ok") for g in _pool(on_theme, off_theme)]


def test_a_ranked_like_round_deals_the_on_theme_third_of_its_band() -> None:
    """30 on-theme of 40 acceptable at weirdness 2: the band is a third of the on-theme ranks
    (10), not a sixth of all (7): with most candidates on theme, choosing a sixth of all threw
    away on-theme candidates of the level's own band (a third of variations' samples)."""
    judged = _judged(30, 10)
    scores = tuple(-0.01 * i for i in range(40))
    order, band = _dealing_order(judged, scores, 2, RERANK, frozenset({"dub"}), 1 / RERANK)
    assert band == 10
    assert all(_on_theme(judged[i].name or "") for i in order[:band])
    # Few on theme: a sixth of all (the off-theme ones fill in), as before.
    judged = _judged(3, 37)
    _, band = _dealing_order(judged, scores, 2, RERANK, frozenset({"dub"}), 1 / RERANK)
    assert band == 7


def test_an_unranked_like_round_deals_every_on_theme_candidate() -> None:
    judged = _judged(30, 10)
    order, band = _dealing_order(judged, (), None, 1.0, frozenset({"dub"}))
    assert band == 30 and all(_on_theme(judged[i].name or "") for i in order[:band])


async def test_like_requests_shrink_to_the_measured_on_theme_share() -> None:
    """Unseeded calls learn how many candidates share the condition's word and stop
    sampling twice their need for it; a seeded call still starts from the prior, so its
    genres depend only on its seed."""
    plain, liked = pool_backend(_pool(400, 0)), pool_backend(_pool(400, 0))
    plain_pipeline = GenrePipeline(plain, KNOWN, max_leading_share=1.0)
    pipeline = GenrePipeline(liked, KNOWN, max_leading_share=1.0)
    for _ in range(5):
        await plain_pipeline.generate(20)
        await pipeline.generate(20, like="dub")
    # Every candidate is on theme: once measured, nothing more is sampled than without like.
    assert liked.requests[0].n > 1.5 * plain.requests[0].n
    assert liked.requests[-1].n <= 1.15 * plain.requests[-1].n, (liked.requests, plain.requests)
    seeded = [await _pipeline(pool_backend(_pool(400, 0))).generate(20, like="dub", seed=9)]
    await pipeline.generate(20, like="dub", seed=9)
    alone = pool_backend(_pool(400, 0))
    again = await GenrePipeline(alone, KNOWN, max_leading_share=1.0).generate(
        20, like="dub", seed=9
    )
    assert again.genres == seeded[0].genres
