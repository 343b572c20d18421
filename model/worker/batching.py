"""Pure batching logic: which queued requests are generated together, and how long a wait is.

Requests are only ever batched with requests of the same :meth:`GenerationRequest.sampling_key`
(temperature, top-p, max tokens, stop strings); prompts may differ. A request with a ``seed`` is
generated alone, so the same seeded request gives the same completions whatever else is queued.
The oldest queued request always goes first, so no request starves.

>>> from model.protocol import GenerationRequest as R
>>> queue = [R("a", n=2), R("b", temperature=0.5), R("c", n=3)]
>>> take_batch(queue, max_sequences=8)
[0, 2]
>>> take_batch(queue, max_sequences=4)
[0]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

from model.protocol import GenerationRequest, GenerationResult

T = TypeVar("T")


def request_tokens(request: GenerationRequest) -> int:
    """An upper bound of the tokens ``request`` puts into a batch, without a tokenizer.

    Each of its ``n`` rows holds the prompt and up to ``max_tokens`` new tokens; the prompt
    counts its UTF-8 bytes (a byte-level BPE token is at least one byte), as ``microgenre
    serve`` counts ``max_request_tokens``.

    >>> from model.protocol import GenerationRequest as R
    >>> request_tokens(R("genre:", n=2, max_tokens=10))
    32
    """
    prompt = len(request.prompt.encode("utf-8", "surrogatepass"))
    return request.n * (prompt + request.max_tokens)


def take_batch(
    queue: Sequence[GenerationRequest],
    max_sequences: int,
    *,
    max_tokens: int | None = None,
    key: Callable[[GenerationRequest], Hashable] = GenerationRequest.sampling_key,
) -> list[int]:
    """Indices (ascending) of the queued requests to generate next.

    The batch is the oldest request plus, in queue order, every later request with the same
    sampling key that still fits in ``max_sequences`` completions (the sum of ``n``) and, when
    given, ``max_tokens`` tokens (the sum of :func:`request_tokens`). A request over either
    bound on its own forms a batch alone; it is never split. Seeded requests are never batched
    with others.

    >>> from model.protocol import GenerationRequest as R
    >>> take_batch([R("a", n=5), R("b", n=5), R("c", n=3)], max_sequences=8)
    [0, 2]
    >>> take_batch([R("a"), R("b", seed=1), R("c")], max_sequences=8)
    [0, 2]
    >>> take_batch([R("a", n=5), R("b", n=5), R("c", n=3)], max_sequences=16, max_tokens=140)
    [0, 2]
    >>> take_batch([], max_sequences=8)
    []
    """
    if not queue:
        return []
    head = key(queue[0])
    chosen = [0]
    total, tokens = queue[0].n, request_tokens(queue[0])
    if queue[0].seed is not None:
        return chosen
    token_room = max_tokens if max_tokens is not None else float("inf")
    for index in range(1, len(queue)):
        request = queue[index]
        if request.seed is not None or key(request) != head:
            continue
        cost = request_tokens(request)
        if total + request.n <= max_sequences and tokens + cost <= token_room:
            chosen.append(index)
            total, tokens = total + request.n, tokens + cost
    return chosen


def group_indices(items: Sequence[T], key: Callable[[T], Hashable]) -> list[list[int]]:
    """Indices of ``items`` grouped by ``key``, groups in order of first appearance.

    >>> group_indices(["a1", "b1", "a2"], key=lambda s: s[0])
    [[0, 2], [1]]
    """
    groups: dict[Hashable, list[int]] = {}
    for index, item in enumerate(items):
        groups.setdefault(key(item), []).append(index)
    return list(groups.values())


def run_grouped(
    complete_batch: Callable[[list[GenerationRequest]], list[GenerationResult]],
    requests: Sequence[GenerationRequest],
) -> list[GenerationResult]:
    """Call ``complete_batch`` once per sampling key; results come back in request order.

    Raises ``ValueError`` when the sampler returns the wrong number of results or completions,
    so a faulty sampler can never hand one request's texts to another.
    """
    results: list[GenerationResult | None] = [None] * len(requests)
    for indices in group_indices(requests, GenerationRequest.sampling_key):
        group = [requests[i] for i in indices]
        out = complete_batch(group)
        if len(out) != len(group):
            raise ValueError(f"the sampler returned {len(out)} results for {len(group)} requests")
        for index, result in zip(indices, out, strict=True):
            if len(result.texts) != requests[index].n:
                raise ValueError(
                    f"the sampler returned {len(result.texts)} completions "
                    f"where {requests[index].n} were asked"
                )
            results[index] = result
    return [r for r in results if r is not None]


def estimate_wait_s(queued_sequences: int, max_sequences: int, batch_s: float) -> float:
    """Rough seconds until ``queued_sequences`` more completions are generated.

    >>> estimate_wait_s(100, 64, 2.0)
    6.0
    """
    batches = math.ceil(max(queued_sequences, 0) / max(max_sequences, 1)) + 1
    return batches * max(batch_s, 0.0)
