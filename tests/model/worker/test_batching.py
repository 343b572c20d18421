"""Batch formation: property tests that requests are grouped correctly and never mixed up."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.protocol import GenerationRequest, GenerationResult
from model.worker.batching import (
    estimate_wait_s,
    group_indices,
    request_tokens,
    run_grouped,
    take_batch,
)

requests_strategy = st.lists(
    st.builds(
        GenerationRequest,
        prompt=st.sampled_from(["genre:", "like: dub\ngenre:", "x"]),
        n=st.integers(1, 12),
        temperature=st.sampled_from([0.7, 1.0, 1.2]),
        top_p=st.sampled_from([0.9, 0.95]),
        max_tokens=st.sampled_from([8, 16]),
        stop=st.sampled_from([(), ("\n",)]),
        seed=st.one_of(st.none(), st.integers(0, 3)),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(requests_strategy, st.integers(1, 32))
def test_draining_the_queue_batches_every_request_once_by_key(
    queue: list[GenerationRequest], max_sequences: int
) -> None:
    remaining = list(range(len(queue)))
    served: list[int] = []
    while remaining:
        picked = take_batch([queue[i] for i in remaining], max_sequences)
        batch = [remaining[i] for i in picked]
        # The oldest waiting request always goes first: nobody starves.
        assert batch[0] == remaining[0]
        assert batch == sorted(batch)
        # One set of sampling options per batch.
        assert len({queue[i].sampling_key() for i in batch}) == 1
        # Within the size limit, unless one request alone is bigger.
        total = sum(queue[i].n for i in batch)
        assert total <= max_sequences or len(batch) == 1
        # Seeded requests run alone (reproducible whatever else is queued).
        assert len(batch) == 1 or all(queue[i].seed is None for i in batch)
        served += batch
        remaining = [i for i in remaining if i not in batch]
    assert sorted(served) == list(range(len(queue)))


@settings(max_examples=200, deadline=None)
@given(requests_strategy, st.integers(1, 32))
def test_a_batch_takes_every_fitting_request_of_its_key(
    queue: list[GenerationRequest], max_sequences: int
) -> None:
    picked = take_batch(queue, max_sequences)
    if not queue or queue[0].seed is not None:
        return
    total = sum(queue[i].n for i in picked)
    for i, request in enumerate(queue):
        if i in picked or request.seed is not None:
            continue
        if request.sampling_key() == queue[0].sampling_key():
            assert total + request.n > max_sequences  # left out only because it did not fit


def _echo_batch(requests: list[GenerationRequest]) -> list[GenerationResult]:
    assert len({r.sampling_key() for r in requests}) == 1, "options mixed in one sampler call"
    return [
        GenerationResult(
            texts=tuple(f"{r.prompt}/{r.sampling_key()}/{j}" for j in range(r.n)), model="m"
        )
        for r in requests
    ]


@settings(max_examples=200, deadline=None)
@given(requests_strategy)
def test_run_grouped_hands_each_request_its_own_results(queue: list[GenerationRequest]) -> None:
    results = run_grouped(_echo_batch, queue)
    assert len(results) == len(queue)
    for request, result in zip(queue, results, strict=True):
        assert result.texts == tuple(
            f"{request.prompt}/{request.sampling_key()}/{j}" for j in range(request.n)
        )


def test_run_grouped_refuses_a_sampler_that_loses_completions() -> None:
    def short(requests: list[GenerationRequest]) -> list[GenerationResult]:
        return [GenerationResult(texts=("only one",), model="m") for _ in requests]

    with pytest.raises(ValueError, match="1 completions where 2 were asked"):
        run_grouped(short, [GenerationRequest("a", n=2)])


def test_group_indices_and_wait_estimate() -> None:
    assert group_indices([1, 2, 3, 4], key=lambda v: v % 2) == [[0, 2], [1, 3]]
    assert estimate_wait_s(0, 64, 1.5) == 1.5
    assert estimate_wait_s(65, 64, 1.0) == 3.0


def test_request_tokens_count_prompt_bytes_and_new_tokens_per_row() -> None:
    assert request_tokens(GenerationRequest("genre:", n=2, max_tokens=10)) == 2 * (6 + 10)
    assert request_tokens(GenerationRequest("é", n=1, max_tokens=1)) == 3  # UTF-8 bytes


@settings(max_examples=300, deadline=None)
@given(requests_strategy, st.integers(1, 64), st.integers(1, 400))
def test_a_batch_stays_within_its_token_bound(
    queue: list[GenerationRequest], max_sequences: int, max_tokens: int
) -> None:
    picked = take_batch(queue, max_sequences, max_tokens=max_tokens)
    if not queue:
        assert picked == []
        return
    assert picked[0] == 0  # a request over the bound still runs, alone
    tokens = sum(request_tokens(queue[i]) for i in picked)
    assert tokens <= max_tokens or picked == [0]
    if queue[0].seed is not None:
        return
    total = sum(queue[i].n for i in picked)
    for i, request in enumerate(queue):
        if i in picked or request.seed is not None:
            continue
        if request.sampling_key() == queue[0].sampling_key():  # left out only if it did not fit
            assert (
                total + request.n > max_sequences or tokens + request_tokens(request) > max_tokens
            )
