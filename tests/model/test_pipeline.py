from __future__ import annotations

import asyncio
import inspect
from collections import deque
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.errors import GenerationError, ModelError
from model.filters import Fingerprint, Moderator
from model.outcome import GenerationOutcome
from model.pipeline import GenrePipeline
from model.protocol import AdapterRef, GenerationRequest, GenerationResult
from model.worker.errors import WorkerCrashedError


class ScriptedBackend:
    """Returns queued completions, n at a time, and records every request."""

    def __init__(self, texts: list[str] | None = None) -> None:
        self.queue: deque[str] = deque(texts or [])
        self.requests: list[GenerationRequest] = []

    def enqueue(self, texts: list[str]) -> None:
        self.queue.extend(texts)

    async def complete(self, request: GenerationRequest) -> GenerationResult:
        self.requests.append(request)
        out = [self.queue.popleft() if self.queue else " \n" for _ in range(request.n)]
        finished = [t.endswith("\n") for t in out]
        texts = tuple(t[:-1] if t.endswith("\n") else t for t in out)
        return GenerationResult(texts=texts, model="scripted", finished=tuple(finished))


KNOWN = Fingerprint.from_names(
    ["post rock", "dream pop", "drum and bass", "techno", "jazz", "gaze", "thing", "number", "b"]
)


async def test_filters_and_counts_each_rejection_reason() -> None:
    backend = ScriptedBackend(
        [
            " glacier pop\n",
            " post rock\n",  # known
            " rock post\n",  # near-copy
            " glacier pop\n",  # repeat
            " this is a sentence. yes\n",  # malformed
            " fuck rock\n",  # offensive
            " never ends",  # truncated
            " swamp techno\n",
            " old gaze\n",  # excluded
            " tundra jazz\n",
            " giyue\n",  # no word a real genre uses
        ]
    )
    pipeline = GenrePipeline(
        backend, KNOWN, Moderator(), min_request=11, max_attempts=1, oversample=1.5
    )
    outcome = await pipeline.generate(3, exclude=["gaze old"])
    assert outcome.genres == ["glacier pop", "swamp techno", "tundra jazz"]
    assert outcome.model == "scripted"
    stats = outcome.stats
    assert stats["raw"] == 11
    assert stats["rejected:no_genre_word"] == 1
    assert stats["rejected:known"] == 1
    assert stats["rejected:near_known"] == 1
    assert stats["rejected:repeat"] == 1
    assert stats["rejected:malformed:sentence"] == 1
    assert stats["rejected:offensive"] == 1
    assert stats["rejected:truncated"] == 1
    assert stats["rejected:excluded"] == 1
    assert stats["delivered"] == 3


async def test_oversamples_in_one_request() -> None:
    backend = ScriptedBackend([f" n{i} number\n" for i in range(100)])
    pipeline = GenrePipeline(backend, KNOWN, oversample=1.5)
    outcome = await pipeline.generate(20)
    assert len(outcome.genres) == 20
    assert len(backend.requests) == 1
    assert backend.requests[0].n > 20
    assert backend.requests[0].stop == ("\n",)
    assert outcome.stats.get("surplus", 0) == backend.requests[0].n - 20


async def test_asks_again_only_for_what_is_missing() -> None:
    backend = ScriptedBackend([" post rock\n"] * 30 + [f" t{i} thing\n" for i in range(100)])
    pipeline = GenrePipeline(backend, KNOWN, oversample=1.0, min_request=1)
    outcome = await pipeline.generate(5)
    assert len(outcome.genres) == 5
    assert len(backend.requests) >= 2
    assert all(g.endswith(" thing") for g in outcome.genres)


async def test_bounded_attempts_raise_a_model_error() -> None:
    backend = ScriptedBackend([" post rock\n"] * 1000)
    pipeline = GenrePipeline(backend, KNOWN, max_attempts=3)
    with pytest.raises(GenerationError) as info:
        await pipeline.generate(5)
    assert isinstance(info.value, ModelError)
    assert len(backend.requests) == 3


async def test_asks_the_backend_not_to_end_on_known_genres_only_when_told_to() -> None:
    backend = ScriptedBackend([f" a{i} b\n" for i in range(50)])
    await GenrePipeline(backend, KNOWN).generate(2)
    await GenrePipeline(backend, KNOWN, avoid_known=True).generate(2)
    assert [r.avoid_known for r in backend.requests] == [False, True]


async def test_passes_like_temperature_and_seed() -> None:
    backend = ScriptedBackend([f" a{i} b\n" for i in range(50)])
    pipeline = GenrePipeline(backend, KNOWN)
    await pipeline.generate(2, like="Shoegaze", temperature=0.7, seed=42)
    request = backend.requests[0]
    assert request.prompt == "like: shoegaze\ngenre:"
    assert request.temperature == 0.7
    assert request.seed == 42


async def test_known_names_extend_the_fingerprint() -> None:
    backend = ScriptedBackend([" store genre\n", " fresh genre\n"] + [" \n"] * 50)
    # "genre" is a word of the known names given here.
    pipeline = GenrePipeline(backend, KNOWN, known=["store genre"], min_request=2)
    outcome = await pipeline.generate(1)
    assert outcome.genres == ["fresh genre"]


async def test_zero_count_is_empty() -> None:
    outcome = await GenrePipeline(ScriptedBackend(), KNOWN).generate(0)
    assert outcome.genres == []


async def test_genre_word_rule_can_be_switched_off() -> None:
    texts = [" giyue\n", " obsoud\n"]
    strict = GenrePipeline(ScriptedBackend(list(texts)), KNOWN, min_request=2, max_attempts=1)
    with pytest.raises(GenerationError):
        await strict.generate(1)
    lax = GenrePipeline(
        ScriptedBackend(list(texts)), KNOWN, min_request=2, require_genre_word=False
    )
    assert (await lax.generate(2)).genres == ["giyue", "obsoud"]


async def test_glued_genre_words_count_as_grounded() -> None:
    backend = ScriptedBackend([" jazztechno\n"])
    outcome = await GenrePipeline(backend, KNOWN, min_request=1).generate(1)
    assert outcome.genres == ["jazztechno"]


async def test_leading_word_cap_without_like_only() -> None:
    texts = [f" jazz {w}\n" for w in "abcdefghij"] + [f" {w}x jazz\n" for w in "abcdefghij"]
    pipeline = GenrePipeline(
        ScriptedBackend(list(texts)),
        KNOWN,
        min_request=20,
        require_genre_word=False,
        min_leading_cap=2,
    )
    outcome = await pipeline.generate(10)
    assert sum(g.startswith("jazz ") for g in outcome.genres) == 2
    assert outcome.stats["rejected:leading_word_cap"] == 8
    steered = GenrePipeline(
        ScriptedBackend(list(texts)), KNOWN, min_request=20, require_genre_word=False
    )
    outcome = await steered.generate(10, like="jazz")
    assert all(g.startswith("jazz ") for g in outcome.genres)


async def test_small_calls_are_not_capped_by_default() -> None:
    texts = [f" jazz {w}\n" for w in "abcde"]
    pipeline = GenrePipeline(ScriptedBackend(texts), KNOWN, min_request=5)
    assert len((await pipeline.generate(5)).genres) == 5


class TaggingBackend:
    """Answers each request with names that say which request, prompt and temperature made them."""

    def __init__(self, *, fail_first: int = 0, delay: float = 0.0) -> None:
        self.requests: list[GenerationRequest] = []
        self.fail_first = fail_first
        self.delay = delay
        self.positions_sent = 0

    async def complete(
        self, request: GenerationRequest, *, on_position: Any = None
    ) -> GenerationResult:
        self.requests.append(request)
        number = len(self.requests)
        if on_position is not None:
            outcome = on_position(3)
            if inspect.isawaitable(outcome):
                await outcome
            self.positions_sent += 1
        await asyncio.sleep(self.delay)
        if number <= self.fail_first:
            raise WorkerCrashedError("the worker died")
        tag = "like" if "like:" in request.prompt else "free"
        temp = f"t{int(request.temperature * 100)}"
        texts = tuple(f" r{number}x{i} {tag} {temp} jazz" for i in range(request.n))
        return GenerationResult(texts, "tagging", finished=tuple([True] * request.n))


async def test_concurrent_calls_share_one_oversampled_request() -> None:
    backend = TaggingBackend()
    pipeline = GenrePipeline(backend, KNOWN, min_request=8)
    outcomes = await asyncio.gather(*(pipeline.generate(1) for _ in range(32)))
    # One request for everyone, far smaller than 32 calls of at least 8 completions each.
    assert len(backend.requests) == 1
    assert 32 <= backend.requests[0].n < 32 * 8
    genres = [g for outcome in outcomes for g in outcome.genres]
    assert len(genres) == 32
    assert len(set(genres)) == 32, "two callers were dealt the same genre"
    # Every sampled candidate is counted once, by exactly one caller.
    assert sum(o.stats["raw"] for o in outcomes) == backend.requests[0].n
    assert all(o.stats["delivered"] == 1 and o.stats["attempts"] == 1 for o in outcomes)


async def test_shared_round_respects_each_callers_exclusions() -> None:
    backend = ScriptedBackend([" alpha jazz\n", " beta jazz\n"] + [" \n"] * 20)
    pipeline = GenrePipeline(backend, KNOWN, min_request=2, max_attempts=1)
    first, second = await asyncio.gather(
        pipeline.generate(1, exclude=["alpha jazz"]), pipeline.generate(1)
    )
    # The first in line may not have "alpha jazz", so it goes to the second caller.
    assert first.genres == ["beta jazz"]
    assert second.genres == ["alpha jazz"]
    assert len(backend.requests) == 1


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([None, "jazz"]), st.sampled_from([0.7, 0.85, 1.0])),
        min_size=1,
        max_size=12,
    )
)
def test_shared_rounds_never_mix_like_or_temperature(calls: list[tuple[str | None, float]]) -> None:
    async def scenario() -> None:
        backend = TaggingBackend()
        pipeline = GenrePipeline(backend, KNOWN, min_request=1, require_genre_word=False)
        outcomes = await asyncio.gather(
            *(pipeline.generate(2, like=like, temperature=temp) for like, temp in calls)
        )
        for (like, temp), outcome in zip(calls, outcomes, strict=True):
            tag = "like" if like else "free"
            assert len(outcome.genres) == 2
            assert all(f" {tag} t{int(temp * 100)} " in g for g in outcome.genres), outcome
        # One request per distinct (like, temperature) is enough here (every candidate is ok).
        assert len(backend.requests) == len(set(calls))

    asyncio.run(scenario())


async def test_seeded_calls_never_share() -> None:
    backend = TaggingBackend()
    pipeline = GenrePipeline(backend, KNOWN, min_request=4, oversample=1.5)
    await asyncio.gather(pipeline.generate(1, seed=1), pipeline.generate(1, seed=2))
    assert sorted(r.seed for r in backend.requests) == [1, 2]
    assert all(r.n == 4 for r in backend.requests)


async def test_backend_error_reaches_every_caller_of_the_round_and_the_next_call_works() -> None:
    backend = TaggingBackend(fail_first=1)
    pipeline = GenrePipeline(backend, KNOWN)
    results = await asyncio.gather(
        *(pipeline.generate(1) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, WorkerCrashedError) for r in results)
    outcome = await pipeline.generate(2)
    assert len(outcome.genres) == 2


async def test_a_caller_that_cannot_be_satisfied_fails_alone() -> None:
    # Every candidate is "alpha jazz" or "beta jazz": the greedy caller can never get 5.
    backend = ScriptedBackend([" alpha jazz\n", " beta jazz\n"] * 50)
    pipeline = GenrePipeline(backend, KNOWN, min_request=2, max_attempts=2)
    small, greedy = await asyncio.gather(
        pipeline.generate(1), pipeline.generate(5), return_exceptions=True
    )
    assert isinstance(small, GenerationOutcome) and len(small.genres) == 1
    assert isinstance(greedy, GenerationError)
    assert "in 2 attempts" in str(greedy)


async def test_a_cancelled_caller_leaves_the_others_unharmed() -> None:
    backend = TaggingBackend(delay=0.05)
    pipeline = GenrePipeline(backend, KNOWN)
    doomed = asyncio.create_task(pipeline.generate(1))
    others = [asyncio.create_task(pipeline.generate(1)) for _ in range(3)]
    await asyncio.sleep(0.01)  # the shared round is in flight
    doomed.cancel()
    outcomes = await asyncio.gather(*others)
    assert [len(o.genres) for o in outcomes] == [1, 1, 1]
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert pipeline._drivers == {} and pipeline._waiting == {}


async def test_every_caller_of_a_shared_round_hears_its_position() -> None:
    backend = TaggingBackend()
    pipeline = GenrePipeline(backend, KNOWN)
    heard: list[tuple[str, int]] = []

    async def edit(position: int) -> None:  # like a Discord message edit
        heard.append(("async", position))

    await asyncio.gather(
        pipeline.generate(1, on_position=lambda p: heard.append(("plain", p))),
        pipeline.generate(1, on_position=edit),
        pipeline.generate(1),
    )
    assert len(backend.requests) == 1
    assert sorted(heard) == [("async", 3), ("plain", 3)]


async def test_without_listeners_the_backend_is_called_plainly() -> None:
    # ScriptedBackend.complete takes no on_position: a call without one must not pass it.
    outcome = await GenrePipeline(ScriptedBackend([" alpha jazz\n"]), KNOWN).generate(1)
    assert outcome.genres == ["alpha jazz"]


async def test_doubled_words_are_rejected_unless_real_genres_double_them() -> None:
    known = KNOWN.union(Fingerprint.from_names(["deep deep house"]))
    texts = [" jazz jazz\n", " deep deep techno\n", " techno techno pop\n"]
    pipeline = GenrePipeline(ScriptedBackend(texts), known, min_request=3, max_attempts=1)
    outcome = await pipeline.generate(1)
    assert outcome.genres == ["deep deep techno"]
    assert outcome.stats["rejected:doubled_word"] == 2


async def test_running_out_of_attempts_keeps_what_was_delivered() -> None:
    backend = ScriptedBackend([" alpha jazz\n"] + [" post rock\n"] * 50)
    pipeline = GenrePipeline(backend, KNOWN, min_request=4, max_attempts=2)
    with pytest.raises(GenerationError) as info:
        await pipeline.generate(3)
    partial = info.value.partial
    assert partial is not None and partial.genres == ["alpha jazz"]
    assert partial.stats["attempts"] == 2
    assert partial.stats["raw"] == sum(r.n for r in backend.requests)


async def test_candidate_budget_stops_a_hopeless_call_early() -> None:
    backend = ScriptedBackend([" post rock\n"] * 1000)
    pipeline = GenrePipeline(backend, KNOWN, max_attempts=10, max_candidates=30)
    with pytest.raises(GenerationError) as info:
        await pipeline.generate(5)
    sampled = sum(r.n for r in backend.requests)
    assert sampled == 30  # the last request is cut to what the budget leaves
    assert len(backend.requests) < 10
    assert "(30 candidates)" in str(info.value)


# ---------------------------------------------------------------- any n


class PatternBackend:
    """Candidate number i (counted over every request) is ``w<i> jazz`` when ``good(i)``, else a
    known genre; records every request and the number of genres handed out at its start."""

    def __init__(self, good: Any, *, delivered: list[str] | None = None) -> None:
        self.good = good
        self.index = 0
        self.requests: list[GenerationRequest] = []
        self.seen_before: list[int] = []  # genres the consumer had received at each request
        self.delivered = delivered if delivered is not None else []

    async def complete(
        self, request: GenerationRequest, *, on_position: Any = None
    ) -> GenerationResult:
        self.requests.append(request)
        self.seen_before.append(len(self.delivered))
        texts = []
        for _ in range(request.n):
            texts.append(f" w{self.index} jazz" if self.good(self.index) else " post rock")
            self.index += 1
        return GenerationResult(tuple(texts), "pattern", finished=tuple([True] * request.n))


class SeededBackend:
    """Completions drawn from ``random.Random(seed)``: the same request gives the same texts;
    a third of them are junk (a known genre or an invented string), nine in ten with ``like``."""

    def __init__(self) -> None:
        self.requests: list[GenerationRequest] = []

    async def complete(
        self, request: GenerationRequest, *, on_position: Any = None
    ) -> GenerationResult:
        import random

        self.requests.append(request)
        rng = random.Random(request.seed)
        junk = 0.9 if "like:" in request.prompt else 0.33
        texts = []
        for _ in range(request.n):
            pick = rng.random()
            if pick < junk - 0.13:
                texts.append(" post rock")
            elif pick < junk:
                texts.append(f" zq{rng.randrange(10**6)}")
            else:
                texts.append(f" k{rng.randrange(10**6)} {rng.choice(['jazz', 'techno', 'gaze'])}")
        return GenerationResult(tuple(texts), "seeded", finished=tuple([True] * request.n))


async def test_large_calls_are_many_bounded_requests() -> None:
    backend = PatternBackend(lambda i: True)
    outcome = await GenrePipeline(backend, KNOWN).generate(5000)
    assert len(outcome.genres) == 5000 == len(set(outcome.genres))
    assert max(r.n for r in backend.requests) <= 256
    assert outcome.stats["raw"] == sum(r.n for r in backend.requests)


@pytest.mark.parametrize("seed", [None, 5])
async def test_the_budget_adapts_to_a_model_accepting_half(seed: int | None) -> None:
    backend = PatternBackend(lambda i: i % 2 == 0)
    outcome = await GenrePipeline(backend, KNOWN).generate(2000, seed=seed)
    assert len(outcome.genres) == 2000
    sampled = sum(r.n for r in backend.requests)
    assert 4000 <= sampled < 4000 * 1.2  # enough rounds, and little waste
    assert outcome.stats["attempts"] == len(backend.requests) > 4


async def test_a_slow_but_steady_model_is_not_given_up_on() -> None:
    # 2 % acceptance: above the collapse threshold, so the call goes on until it is complete.
    backend = PatternBackend(lambda i: i % 50 == 49)
    outcome = await GenrePipeline(backend, KNOWN).generate(30)
    assert len(outcome.genres) == 30
    assert sum(r.n for r in backend.requests) >= 1500


@pytest.mark.parametrize("seed", [None, 1])
async def test_a_collapsed_acceptance_rate_gives_up_with_what_it_has(seed: int | None) -> None:
    from model.pipeline import COLLAPSE_RATE, COLLAPSE_WINDOW

    backend = PatternBackend(lambda i: i < 300)  # 300 good candidates, then nothing
    with pytest.raises(GenerationError) as info:
        await GenrePipeline(backend, KNOWN).generate(1000, seed=seed)
    partial = info.value.partial
    assert partial is not None and len(partial.genres) == 300
    sampled = sum(r.n for r in backend.requests)
    # It gave up as soon as the last window held too few acceptances, not before.
    assert COLLAPSE_WINDOW * (1 - COLLAPSE_RATE) <= sampled - 300 < COLLAPSE_WINDOW + 256
    message = str(info.value)
    assert "\n" not in message
    assert "only 300 of 1000 acceptable genres" in message
    assert f"of the last {COLLAPSE_WINDOW} candidates" in message
    assert f"({sampled} candidates)" in message


async def test_the_collapse_window_and_rate_are_settings() -> None:
    backend = PatternBackend(lambda i: i % 10 == 0)  # 10 % acceptance
    pipeline = GenrePipeline(backend, KNOWN, collapse_window=100, collapse_rate=0.2)
    with pytest.raises(GenerationError) as info:
        await pipeline.generate(500)
    assert info.value.partial is not None and 0 < len(info.value.partial.genres) < 500
    assert sum(r.n for r in backend.requests) < 100 + 256
    lenient = GenrePipeline(PatternBackend(lambda i: i % 10 == 0), KNOWN, collapse_rate=0.05)
    assert len((await lenient.generate(500)).genres) == 500


async def test_seeded_calls_are_deterministic_whatever_the_pipeline_served_before() -> None:
    fresh = await GenrePipeline(SeededBackend(), KNOWN).generate(700, seed=3)
    used = GenrePipeline(SeededBackend(), KNOWN)
    await used.generate(50, like="gaze")  # moves the shared acceptance estimate far down
    again = await used.generate(700, seed=3)
    assert len(fresh.genres) == 700
    assert again.genres == fresh.genres
    other = await GenrePipeline(SeededBackend(), KNOWN).generate(700, seed=4)
    assert other.genres != fresh.genres


async def test_neighbouring_seeds_do_not_replay_each_others_requests() -> None:
    seeds: dict[int, list[int | None]] = {}
    for seed in (3, 4):
        backend = PatternBackend(lambda i: i % 2 == 0)
        await GenrePipeline(backend, KNOWN).generate(1000, seed=seed)
        seeds[seed] = [r.seed for r in backend.requests]
    assert seeds[3][0] == 3 and seeds[4][0] == 4
    assert len(set(seeds[3])) == len(seeds[3]) > 1
    assert not set(seeds[3]) & set(seeds[4])


async def test_thousands_of_exclusions_are_never_delivered() -> None:
    previous = [f"w{i} jazz" for i in range(0, 6000, 2)]  # every other candidate
    outcome = await GenrePipeline(PatternBackend(lambda i: True), KNOWN).generate(
        2000, exclude=previous
    )
    assert len(outcome.genres) == 2000
    assert not set(outcome.genres) & set(previous)
    assert outcome.stats["rejected:excluded"] >= 2000


@pytest.mark.parametrize("seed", [None, 2])
async def test_stream_hands_out_genres_before_the_call_is_complete(seed: int | None) -> None:
    received: list[str] = []
    backend = PatternBackend(lambda i: True, delivered=received)
    stream = GenrePipeline(backend, KNOWN, max_request=100).stream(1000, seed=seed)
    async for genre in stream:
        received.append(genre)
    assert len(received) == 1000 == len(set(received))
    assert len(backend.requests) >= 10
    # Every request after the first found the genres of the earlier ones already handed out.
    assert backend.seen_before[0] == 0 and all(b > 0 for b in backend.seen_before[1:])
    assert stream.outcome.genres == received


async def test_stream_yields_what_it_has_then_raises() -> None:
    stream = GenrePipeline(PatternBackend(lambda i: i < 40), KNOWN).stream(100)
    received = []
    with pytest.raises(GenerationError, match="only 40 of 100"):
        async for genre in stream:
            received.append(genre)
    assert len(received) == 40 and stream.outcome.genres == received


async def test_a_stream_closed_early_stops_asking() -> None:
    backend = PatternBackend(lambda i: True)
    pipeline = GenrePipeline(backend, KNOWN, max_request=50)
    stream = pipeline.stream(1000)
    received = [genre async for genre, _ in zip_count(stream, 60)]
    await stream.aclose()
    await asyncio.sleep(0.01)
    assert len(received) == 60
    assert len(backend.requests) <= 3
    assert pipeline._drivers == {} and pipeline._waiting == {}


async def zip_count(stream: Any, limit: int) -> Any:
    """The first ``limit`` items of ``stream``, each with its number."""
    number = 0
    async for item in stream:
        yield item, number
        number += 1
        if number >= limit:
            return


class AdapterTaggingBackend:
    """Answers with names that say which adapter made them; records every request."""

    def __init__(self) -> None:
        self.requests: list[GenerationRequest] = []

    async def complete(self, request: GenerationRequest) -> GenerationResult:
        self.requests.append(request)
        await asyncio.sleep(0)  # let the other callers join or start their rounds
        tag = request.adapter.name if request.adapter is not None else "default"
        number = len(self.requests)
        texts = tuple(f" {tag} r{number}x{i} jazz" for i in range(request.n))
        return GenerationResult(texts, "tagging", finished=tuple([True] * request.n))


ADAPTERS = [None, AdapterRef("guild-1-run-0001", "/a/1"), AdapterRef("guild-2-run-0002", "/a/2")]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.sampled_from(ADAPTERS), min_size=1, max_size=12))
def test_callers_with_different_adapters_never_share_a_round(
    adapters: list[AdapterRef | None],
) -> None:
    async def scenario() -> None:
        backend = AdapterTaggingBackend()
        pipeline = GenrePipeline(backend, KNOWN, min_request=1, require_genre_word=False)
        outcomes = await asyncio.gather(*(pipeline.generate(2, adapter=a) for a in adapters))
        for adapter, outcome in zip(adapters, outcomes, strict=True):
            tag = adapter.name if adapter is not None else "default"
            assert len(outcome.genres) == 2
            assert all(g.startswith(f"{tag} ") for g in outcome.genres), outcome
        # Each request carries exactly one caller group's adapter, and one per adapter is
        # enough here (every candidate is accepted).
        assert {r.adapter for r in backend.requests} == set(adapters)
        assert len(backend.requests) == len(set(adapters))

    asyncio.run(scenario())
