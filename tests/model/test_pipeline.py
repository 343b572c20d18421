from __future__ import annotations

from collections import deque

import pytest

from model.errors import GenerationError, ModelError
from model.filters import Fingerprint, Moderator
from model.pipeline import GenrePipeline
from model.protocol import GenerationRequest, GenerationResult


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
        return GenerationResult(texts=texts, model="scripted", extra={"finished": finished})


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
    pipeline = GenrePipeline(backend, KNOWN, Moderator(), min_request=11, max_attempts=1)
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
