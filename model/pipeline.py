"""From raw completions to delivered genres: parse, validate, moderate, check novelty.

:class:`GenrePipeline` asks its backend for more candidates than it needs (oversampling by the
acceptance rate it has observed so far), filters them, and asks again for what is still
missing. One request is at most ``max_request`` completions (the worker's batch size), so a
large call is many bounded requests, and :meth:`GenrePipeline.stream` hands out each genre as
soon as the request it came from is judged. There is no fixed number of requests: a call goes
on while the model keeps delivering and gives up only when the acceptance rate collapses, when
fewer than ``collapse_rate`` of the last ``collapse_window`` candidates sampled for it were
accepted (optional hard caps: ``max_attempts`` requests, ``max_candidates`` candidates). It
never imports torch: the backend may be the in-process :class:`~model.sampler.LocalBackend`,
the worker process or a scripted fake.

Rejection reasons counted in :attr:`GenerationOutcome.stats`: ``truncated`` (no end marker),
``malformed:<reason>`` (see :func:`model.filters.validate`), ``offensive``, ``known`` (a real
genre), ``near_known`` (a near-copy of one), ``excluded`` (generated before in this scope),
``repeat`` (twice in this call), ``no_genre_word`` (no word of it, nor two glued, is a word
real genres use: an invented string like "giyue" rather than a name that reads as a genre)
and ``doubled_word`` (a word said twice in a row, "jazz jazz", that no real genre doubles).
Without ``like``, a call holds each leading word to its training share: with a
:class:`~model.filters.LeadingPrior` (the adapter's ``leading_words.json``, carried by its
fingerprint), a word may lead at most ``max_leading_ratio`` (1.5) times its share of the training
genres; without one, at most ``max_leading_share`` of the call. Either way at least
``min_leading_cap`` genres, so small calls are not starved. ``leading_word_cap`` counts those
held back.

Plausibility and weirdness: when the backend scores its completions
(:attr:`~model.protocol.GenerationResult.scores`, the mean log-probability of each completion
under the model) and a call asks for a ``weirdness`` level 1..5, its requests are ``rerank``
times larger and a round deals at most ``1 / rerank`` of its acceptable candidates, in the
order of :func:`band_order`: the level's band of plausibility first (five bands of a third,
spread evenly from the top to the bottom), so level 1 delivers the most plausible novel
candidates, 5 the least plausible that still pass every filter, and the rest stay
``surplus``. Without scores or a level, candidates are dealt in sampling order. A call about to
give up takes the acceptable candidates its rounds held back.

A ``like:`` call deals first, in the order above, the candidates that share a word with its
condition (:func:`~model.filters.theme_words`): with a level, the on-theme third of the band
(a third of the on-theme candidates' ranks), unranked all of them. The others fill in only when
fewer than ``1 / like_choose`` of the acceptable candidates are on theme, and the rest stay
``surplus``. Its requests are larger by the inverse of the on-theme share, measured as rounds
go (at most ``like_choose`` times; a seeded call starts from that bound). A blend's condition
(``like: a | b``) deals those that share a word with both parents before those that share one.

Concurrent unseeded calls with the same ``like`` and temperature share rounds: one request,
oversampled for their combined need, whose accepted candidates are dealt out in arrival order.
Thirty-two users asking for one genre each then cost one request of about 50 completions
rather than 32 requests of at least ``min_request``; the batching worker underneath still
merges requests of different prompts. A seeded call runs alone, sizes its requests from its
own acceptance estimate and derives each request's seed from its own (:func:`round_seed`), so
its genres depend only on the seed, the backend and the call's arguments.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import math
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field

from model.errors import GenerationError
from model.filters import (
    Fingerprint,
    LeadingPrior,
    Moderator,
    leading_word,
    near_key,
    theme_words,
    validate,
)
from model.outcome import GenerationOutcome
from model.protocol import AdapterRef, CompletionBackend, GenerationRequest, PositionCallback
from model.textformat import BLEND_SEPARATOR, END_MARKER, build_prompt, clean_like, parse_completion

log = logging.getLogger(__name__)

# A call gives up when fewer than COLLAPSE_RATE of the last COLLAPSE_WINDOW candidates sampled
# for it were accepted; as long as the model does better, it keeps asking.
COLLAPSE_WINDOW = 1000
COLLAPSE_RATE = 0.01
# Most completions in one backend request: the local worker's ``max_batch_size``.
MAX_REQUEST = 256
# Requests are sized as if at least this share of candidates survived the filters.
MIN_YIELD = 0.05


# Calls share rounds only with calls of the same prompt, temperature, adapter and weirdness.
_RoundKey = tuple[str, float, AdapterRef | None, int | None]
# The sampling temperature of every call that does not choose one. Measured on the held-out
# split (docs/benchmarks.md, quality experiments, run 8): 0.75 re-invents 2.67x the raw markovify
# baseline unranked, against 2.08x at the earlier 0.85.
DEFAULT_TEMPERATURE = 0.75
# A call's first request assumes 1 / OVERSAMPLE of its candidates survive (later ones use the
# measured yield): about what survives at DEFAULT_TEMPERATURE, where more candidates are real
# genres, so `generate -n 20` is one request instead of two or three.
OVERSAMPLE = 3.0
# Weirdness levels: 1 = the most plausible novel candidates .. 5 = the least plausible ones.
WEIRDNESS_LEVELS = range(1, 6)
# A call with a weirdness level samples this many times the candidates it needs, to choose from.
RERANK = 3.0
# A ``like:`` call deals first the candidates that share a word with its condition
# (docs/benchmarks.md, quality experiments, run 9), and samples at most this many times the
# candidates it needs for that: the inverse of the measured on-theme share, at most this.
LIKE_CHOOSE = 2.0


@dataclass
class _Judged:
    text: str
    name: str | None
    verdict: str  # "ok" or a rejection reason


@dataclass
class _YieldEstimate:
    """Running estimate of the share of candidates that survive the filters."""

    value: float

    def update(self, observed: float) -> None:
        # Smoothed so one unlucky batch does not explode the next request.
        self.value = min(1.0, max(MIN_YIELD, 0.5 * self.value + 0.5 * observed))


def band_order(scores: list[float], weirdness: int, share: float = 1 / RERANK) -> list[int]:
    """Positions of ``scores`` in the order a weirdness level deals them.

    Candidates are ranked from the most plausible (highest score) to the least. A level's band
    is a ``share`` of the ranks, the five bands spread evenly from the top (level 1) to the
    bottom (level 5), so neighbouring bands of a third share half their ranks. The band comes
    first, from its end nearest the level's quantile ``(w - 1) / 4`` (level 1 from the most
    plausible, 5 from the least, 3 from the middle), then the other ranks, nearest first.

    >>> scores = [-1.0, -5.0, -3.0, -2.0, -4.0]
    >>> band_order(scores, 1), band_order(scores, 5)
    ([0, 3, 2, 4, 1], [1, 4, 2, 3, 0])
    >>> band_order(scores, 3)[:3]
    [2, 3, 4]
    """
    level = min(max(weirdness, WEIRDNESS_LEVELS[0]), WEIRDNESS_LEVELS[-1])
    ranked = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    size = len(ranked)
    width = min(max(share, 0.0), 1.0) * size
    quantile = (level - 1) / (len(WEIRDNESS_LEVELS) - 1)
    start, anchor = quantile * (size - width), quantile * size

    def key(rank: int) -> tuple[bool, float, int]:
        middle = rank + 0.5
        return (not start <= middle <= start + width, abs(middle - anchor), rank)

    return [ranked[r] for r in sorted(range(size), key=key)]


def round_seed(seed: int, attempt: int) -> int:
    """The seed of request number ``attempt`` (from 0) of a call seeded with ``seed``.

    The first request uses the seed itself; later ones a 31-bit hash of (seed, attempt), so
    calls with neighbouring seeds do not replay each other's requests one round apart.

    >>> round_seed(3, 0)
    3
    >>> round_seed(3, 1) == round_seed(3, 1), round_seed(3, 1) == round_seed(4, 0)
    (True, False)
    """
    if attempt == 0:
        return seed
    digest = hashlib.blake2b(f"{seed}:{attempt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 33


class GenreStream:
    """The genres of one call, each as soon as it is accepted: ``async for genre in stream``.

    When the call cannot be completed, the iteration yields every genre delivered and then
    raises :class:`~model.errors.GenerationError` (with ``partial``). :attr:`outcome` is what
    the call has delivered and rejected so far (complete once the iteration has ended).
    """

    def __init__(self, caller: _Caller, genres: AsyncIterator[str]) -> None:
        self._caller = caller
        self._genres = genres

    def __aiter__(self) -> GenreStream:
        return self

    async def __anext__(self) -> str:
        return await self._genres.__anext__()

    async def aclose(self) -> None:
        """Stop generating for this call (a shared round in flight still serves the others)."""
        close = getattr(self._genres, "aclose", None)
        if close is not None:
            await close()

    @property
    def outcome(self) -> GenerationOutcome:
        return self._caller.outcome()

    @property
    def model(self) -> str:
        """The model that wrote the genres so far ("" before the first request)."""
        return self._caller.model


class GenrePipeline:
    """Generate distinct, well-formed, inoffensive, novel genre names."""

    def __init__(
        self,
        backend: CompletionBackend,
        fingerprint: Fingerprint | None,
        moderator: Moderator | None = None,
        *,
        temperature: float = DEFAULT_TEMPERATURE,
        top_p: float = 0.95,
        max_tokens: int = 16,
        oversample: float = OVERSAMPLE,
        max_attempts: int | None = None,
        max_request: int = MAX_REQUEST,
        max_candidates: int | None = None,
        min_request: int = 8,
        collapse_window: int = COLLAPSE_WINDOW,
        collapse_rate: float = COLLAPSE_RATE,
        known: Iterable[str] = (),
        require_genre_word: bool = True,
        max_leading_share: float = 0.02,
        min_leading_cap: int = 5,
        leading_prior: LeadingPrior | None = None,
        max_leading_ratio: float = 1.5,
        share_rounds: bool = True,
        rerank: float = RERANK,
        like_choose: float = LIKE_CHOOSE,
        avoid_known: bool = False,
    ) -> None:
        if collapse_window < 1 or not 0 <= collapse_rate <= 1:
            raise ValueError("collapse_window must be positive and collapse_rate in [0, 1]")
        self.backend = backend
        self.fingerprint = fingerprint if fingerprint is not None else Fingerprint()
        if known:
            self.fingerprint = self.fingerprint.union(Fingerprint.from_names(known))
        self.moderator = moderator
        self.temperature = temperature
        self.top_p = top_p
        self.max_tokens = max_tokens
        self.oversample = oversample
        # Optional hard caps on one call: requests, and raw candidates sampled for it.
        self.max_attempts = max_attempts
        self.max_candidates = max_candidates
        self.max_request = max_request
        self.min_request = min_request
        self.collapse_window = collapse_window
        self.collapse_rate = collapse_rate
        self.require_genre_word = require_genre_word
        self.max_leading_share = max_leading_share
        self.min_leading_cap = min_leading_cap
        # The training share of each leading word (None: the flat ``max_leading_share`` cap).
        self.leading_prior = leading_prior or self.fingerprint.leading
        self.max_leading_ratio = max_leading_ratio
        self.share_rounds = share_rounds
        # Oversampling of calls with a weirdness level (they choose from the scored candidates).
        self.rerank = max(1.0, rerank)
        # Oversampling of ``like:`` calls (they deal the candidates on their theme first).
        self.like_choose = max(1.0, like_choose)
        # Ask the backend not to end a sample on a genre its adapter knows (the request's
        # ``avoid_known``, ``[model] avoid_known``): the samples the filter would drop as
        # ``known`` are not drawn. Opt-in: about twice as fast, but the forced continuations
        # ("shoegaze" -> "shoegaze revival") re-invent real genres far less (docs/benchmarks.md).
        self.avoid_known = avoid_known
        # Unseeded calls waiting for a shared round, and the task running those rounds, by
        # (prompt, temperature, adapter).
        self._waiting: dict[_RoundKey, list[_Caller]] = {}
        self._drivers: dict[_RoundKey, asyncio.Task[None]] = {}
        # Acceptance estimate of unseeded calls, carried over from call to call, and the share
        # of acceptable candidates of their ``like:`` rounds that share the condition's word.
        self._yield = _YieldEstimate(1.0 / oversample)
        self._on_theme = _YieldEstimate(1.0 / self.like_choose)

    def judge(
        self, texts: Iterable[str], finished: Iterable[bool] | None, seen: set[str]
    ) -> list[_Judged]:
        """Verdicts for raw completions; adds accepted near keys to ``seen``."""
        texts = list(texts)
        done = list(finished) if finished is not None else [True] * len(texts)
        judged: list[_Judged] = []
        for text, ended in zip(texts, done, strict=True):
            name = parse_completion(text if not ended else text + END_MARKER)
            if name is None:
                judged.append(_Judged(text, None, "truncated" if not ended else "malformed:empty"))
                continue
            reason = validate(name)
            judged.append(_Judged(text, name, f"malformed:{reason}" if reason else "ok"))
        pending = [j for j in judged if j.verdict == "ok"]
        if self.moderator is not None and pending:
            flags = self.moderator.flags([j.name or "" for j in pending])
            for j, flagged in zip(pending, flags, strict=True):
                if flagged:
                    j.verdict = "offensive"
        for j in judged:
            if j.verdict != "ok" or j.name is None:
                continue
            match = self.fingerprint.match(j.name)
            if match is not None:
                j.verdict = match
                continue
            if self.require_genre_word and not self.fingerprint.grounded(j.name):
                j.verdict = "no_genre_word"
                continue
            if not self.fingerprint.doubles_like_real(j.name):
                j.verdict = "doubled_word"
                continue
            key = near_key(j.name)
            if key in seen:
                j.verdict = "repeat"
                continue
            seen.add(key)
        return judged

    async def generate(
        self,
        count: int,
        *,
        like: str | None = None,
        temperature: float | None = None,
        seed: int | None = None,
        exclude: Collection[str] = (),
        on_position: PositionCallback | None = None,
        adapter: AdapterRef | None = None,
        weirdness: int | None = None,
    ) -> GenerationOutcome:
        """``count`` distinct novel genres, none near any name in ``exclude``.

        The whole of :meth:`stream` at once. Raises :class:`~model.errors.GenerationError`
        (with what was delivered as ``partial``) when the acceptance rate collapses or a hard
        cap binds first, and whatever the backend raises for a request this call took part in.
        """
        stream = self.stream(
            count,
            like=like,
            temperature=temperature,
            seed=seed,
            exclude=exclude,
            on_position=on_position,
            adapter=adapter,
            weirdness=weirdness,
        )
        async for _ in stream:
            pass
        return stream.outcome

    def stream(
        self,
        count: int,
        *,
        like: str | None = None,
        temperature: float | None = None,
        seed: int | None = None,
        exclude: Collection[str] = (),
        on_position: PositionCallback | None = None,
        adapter: AdapterRef | None = None,
        weirdness: int | None = None,
    ) -> GenreStream:
        """``count`` distinct novel genres, none near any name in ``exclude``, as accepted.

        ``adapter`` names the model every request of this call uses (None: the backend's
        default). Unseeded calls with the same ``like``, temperature and adapter that wait at
        the same time share rounds: one backend request oversampled for all of them, whose
        accepted candidates are dealt out in arrival order (never the same genre to two
        callers). A seeded call always runs alone, so its result does not depend on other
        callers. ``on_position`` is passed to the backend (see
        :class:`~model.protocol.CompletionBackend`) for every request this call's candidates
        come from. Nothing is requested before the first ``anext``. ``weirdness`` 1..5 picks
        the plausibility band of the genres (see the module docstring; None: sampling order).
        """
        if count < 0:
            raise GenerationError("The number of genres must be positive.")
        temp = self.temperature if temperature is None else temperature
        prompt = build_prompt(like)
        caller = _Caller(
            count=count,
            steer=like is not None,
            theme=theme_words(like) if like else frozenset(),
            parents=_blend_parents(like),
            excluded={near_key(name) for name in exclude},
            lead_cap=self._lead_cap(count),
            recent=deque(maxlen=self.collapse_window),
            on_position=on_position,
        )
        key: _RoundKey = (prompt, temp, adapter, weirdness)
        if count == 0 or seed is not None or not self.share_rounds:
            return GenreStream(caller, self._stream_alone(caller, key, seed))
        return GenreStream(caller, self._stream_shared(caller, key))

    async def _stream_alone(
        self, caller: _Caller, key: _RoundKey, seed: int | None
    ) -> AsyncIterator[str]:
        # A seeded call sizes its requests from its own estimate: its requests, and so its
        # genres, must not depend on what the pipeline served before.
        estimate = self._yield if seed is None else _YieldEstimate(1.0 / self.oversample)
        on_theme = self._on_theme if seed is None else _YieldEstimate(1.0 / self.like_choose)
        while caller.missing > 0:
            if self._spent(caller):
                complete = self._fall_back(caller)
                for name in caller.unsent():
                    yield name
                if not complete:
                    raise self._exhausted(caller)
                return
            seed_now = None if seed is None else round_seed(seed, caller.attempts)
            await self._round([caller], key, seed_now, estimate, on_theme)
            for name in caller.unsent():
                yield name

    async def _stream_shared(self, caller: _Caller, key: _RoundKey) -> AsyncIterator[str]:
        future = caller.future = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(caller)
        if key not in self._drivers:
            self._drivers[key] = asyncio.create_task(self._drive(key))
        try:
            while True:
                caller.changed.clear()
                for name in caller.unsent():
                    yield name
                if future.done():
                    future.result()  # raises why the call failed
                    return
                # The driver sets ``changed`` when it deals this caller a genre or settles it.
                await caller.changed.wait()
        finally:
            if not future.done():  # cancelled or closed: rounds skip it from now on
                future.cancel()
            waiting = self._waiting.get(key)
            if waiting is not None and caller in waiting:
                waiting.remove(caller)

    async def _drive(self, key: _RoundKey) -> None:
        """Run shared rounds for ``key`` until nobody waits for it any more."""
        try:
            while True:
                # Let callers that started in the same event-loop turn join this round.
                await asyncio.sleep(0)
                waiting = self._waiting.get(key, [])
                callers = [c for c in waiting if not c.settled]
                waiting[:] = callers
                if not callers:
                    return
                # Only as many callers as one request can serve; the rest go next round.
                chosen: list[_Caller] = []
                budget = 0
                for caller in callers:
                    if chosen and budget + caller.missing > self.max_request:
                        break
                    chosen.append(caller)
                    budget += caller.missing
                try:
                    await self._round(chosen, key, None, self._yield, self._on_theme)
                except Exception as exc:  # the backend failed: every caller of it hears why
                    for caller in chosen:
                        caller.fail(exc)
                    continue
                for caller in chosen:
                    if caller.missing > 0 and self._spent(caller) and not self._fall_back(caller):
                        caller.fail(self._exhausted(caller))
                    elif caller.missing <= 0:
                        caller.finish()
        finally:
            self._drivers.pop(key, None)
            waiting = self._waiting.pop(key, [])
            for caller in waiting:  # only when the driver itself was cancelled
                caller.fail(GenerationError("Generation was cancelled; please try again."))

    def _lead_cap(self, count: int) -> Callable[[str], int]:
        """The most genres of a call of ``count`` that each leading word may start."""
        floor, prior = self.min_leading_cap, self.leading_prior
        if prior is None:
            flat = max(floor, math.ceil(count * self.max_leading_share))
            return lambda _word: flat
        ratio = self.max_leading_ratio
        return lambda word: prior.cap(word, count, ratio=ratio, floor=floor)

    def _request_size(
        self, callers: list[_Caller], estimate: _YieldEstimate, choose: float = 1.0
    ) -> int:
        """Completions to ask for: what ``callers`` miss, oversampled, within the bounds.

        ``choose`` times more when the round chooses its genres from the candidates.
        """
        missing = sum(c.missing for c in callers) * choose
        n = math.ceil(missing / max(estimate.value, MIN_YIELD) * 1.1) + 2
        n = max(self.min_request, min(n, self.max_request))
        if self.max_candidates is not None:
            left = max(self.max_candidates - c.sampled for c in callers)
            n = max(1, min(n, left))
        return n

    async def _round(
        self,
        callers: list[_Caller],
        key: _RoundKey,
        seed: int | None,
        estimate: _YieldEstimate,
        on_theme: _YieldEstimate,
    ) -> None:
        """One backend request for ``callers``; deal out what survives the filters. Learns the
        share that passes them (``estimate``) and of those the share on theme (``on_theme``)."""
        prompt, temp, adapter, weirdness = key
        theme = callers[0].theme  # callers of one round share the prompt, so the condition
        rank_choose = 1.0 if weirdness is None else self.rerank
        theme_choose = 1.0 / max(on_theme.value, 1.0 / self.like_choose) if theme else 1.0
        n = self._request_size(callers, estimate, rank_choose * theme_choose)
        request = GenerationRequest(
            prompt=prompt,
            n=n,
            temperature=temp,
            top_p=self.top_p,
            max_tokens=self.max_tokens,
            stop=(END_MARKER,),
            seed=seed,
            adapter=adapter,
            avoid_known=self.avoid_known,
        )
        for caller in callers:
            caller.attempts += 1
            caller.sampled += n
        listeners = [c.on_position for c in callers if c.on_position is not None]
        if listeners:
            result = await self.backend.complete(request, on_position=_fan_out(listeners))
        else:
            result = await self.backend.complete(request)
        finished = result.finished or None
        taken = {key for c in callers for key in c.taken}
        # Moderation and the fingerprint over up to max_request candidates: in a thread, so
        # the event loop (the bot's, in production) keeps answering meanwhile.
        judged = await asyncio.to_thread(self.judge, result.texts, finished, taken)
        # Per candidate: did it pass everything, including the dealing (the collapse rule).
        accepted: dict[int, bool] = {}
        share, parents = 1 / self.rerank, callers[0].parents
        order, band = _dealing_order(
            judged, result.scores, weirdness, rank_choose, theme, share, parents, self.like_choose
        )
        ok = [j.name for j in judged if j.verdict == "ok" and j.name is not None]
        if theme and ok:
            on_theme.update(sum(bool(theme & theme_words(n)) for n in ok) / len(ok))
        dealt = 0
        for index in order:
            j = judged[index]
            needy = [c for c in callers if c.missing > 0 and not c.settled]
            verdict = j.verdict
            if verdict == "ok" and j.name is not None and dealt < band:
                recipient, verdict = self._deal(j.name, needy)
                if recipient is not None:
                    recipient.take(j.name, result.model)
                    dealt += 1
                    accepted[index] = True
                    continue
            elif verdict == "repeat" and j.name is not None:
                near = near_key(j.name)
                if any(near in c.excluded for c in needy or callers):
                    verdict = "excluded"
            accepted[index] = verdict == "ok"
            # Attribute the rejected (or surplus) candidate to someone who still waits, so
            # per-call statistics add up to what was sampled.
            owner = (needy or callers)[index % len(needy or callers)]
            owner.model = result.model
            owner.reject(j.name or j.text, verdict)
            if verdict == "ok" and j.name is not None and needy:
                owner.reserve.append(j.name)  # held back by the band: its last resort
        for caller in callers:
            # In sampling order, whatever order they were dealt in.
            caller.recent.extend(accepted[i] for i in range(len(judged)))
        estimate.update(sum(j.verdict == "ok" for j in judged) / max(len(judged), 1))

    def _collapsed(self, caller: _Caller) -> bool:
        """Whether fewer than ``collapse_rate`` of the last ``collapse_window`` were accepted."""
        recent = caller.recent
        return len(recent) >= self.collapse_window and sum(recent) < self.collapse_rate * len(
            recent
        )

    def _spent(self, caller: _Caller) -> bool:
        """Whether ``caller`` should give up: a hard cap binds or the acceptance collapsed."""
        if self.max_attempts is not None and caller.attempts >= self.max_attempts:
            return True
        if self.max_candidates is not None and caller.sampled >= self.max_candidates:
            return True
        return self._collapsed(caller)

    def _fall_back(self, caller: _Caller) -> bool:
        """Before ``caller`` gives up, deal it the acceptable candidates its rounds held back
        (outside its weirdness band or off its ``like:`` theme): better than too few genres.
        Whether that completed the call."""
        reserve, caller.reserve = caller.reserve, []
        for name in reserve:
            if caller.missing <= 0:
                break
            if near_key(name) not in caller.taken and self._deal(name, [caller])[0] is caller:
                caller.reclaim(name)
        return caller.missing <= 0

    def _exhausted(self, caller: _Caller) -> GenerationError:
        """The one-line error of a call that gives up, with what it delivered as ``partial``."""
        why = ""
        if self._collapsed(caller):
            why = (
                f": only {sum(caller.recent)} of the last {len(caller.recent)} candidates were "
                f"acceptable (it stops below {self.collapse_rate:.0%})"
            )
        return GenerationError(
            f"The model produced only {len(caller.genres)} of {caller.count} acceptable genres "
            f"in {caller.attempts} attempts ({caller.sampled} candidates){why}; try a higher "
            "temperature or a different 'like'.",
            partial=caller.outcome(),
        )

    def _deal(self, name: str, needy: list[_Caller]) -> tuple[_Caller | None, str]:
        """The first caller in line who may take ``name``; else why nobody could."""
        if not needy:
            return None, "ok"  # a surplus candidate: fine, but nobody needs it
        key = near_key(name)
        lead = leading_word(name)
        reason = "ok"
        for caller in needy:
            if key in caller.excluded:
                reason = "excluded" if reason == "ok" else reason
                continue
            if not caller.steer and caller.lead_counts[lead] >= caller.lead_cap(lead):
                # Counter the model's preference for frequent heads ("musica …", "rap …"): no
                # leading word takes more than its (training) share of one call.
                reason = "leading_word_cap" if reason == "ok" else reason
                continue
            return caller, "ok"
        return None, reason


def _blend_parents(like: str | None) -> tuple[frozenset[str], ...]:
    """The theme words of each parent of a blend's condition; empty unless it has two parts.

    >>> [sorted(p) for p in _blend_parents("Shoegaze | Finnish Polkas")]
    [['shoegaze'], ['finnish', 'polka']]
    >>> _blend_parents("dub"), _blend_parents(None)
    ((), ())
    """
    cleaned = clean_like(like)
    parts = cleaned.split(BLEND_SEPARATOR) if cleaned else []
    return tuple(theme_words(p) for p in parts) if len(parts) == 2 else ()


def _dealing_order(
    judged: list[_Judged],
    scores: tuple[float, ...],
    weirdness: int | None,
    choose: float,
    theme: frozenset[str] = frozenset(),
    band_share: float = 1 / RERANK,
    parents: tuple[frozenset[str], ...] = (),
    like_choose: float = LIKE_CHOOSE,
) -> tuple[list[int], int]:
    """The order to deal a round's candidates in, and how many acceptable ones it may deal.

    The acceptable ones first: in sampling order, or with scores and a level in
    :func:`band_order` (bands ``band_share`` wide); with a ``theme`` (a ``like:`` call's
    words), those sharing a word with it before the others, and for a blend's ``parents``
    those sharing a word with both before those sharing one. At most a ``1 / choose`` share of
    them (a ranked round sampled ``choose`` times its need to choose from; also when its
    request was capped lower), then the rest. With a ``theme``, the share is of the on-theme
    ones, or of ``1 / like_choose`` of all when fewer are on theme (the others fill in).
    """
    ok = [i for i, j in enumerate(judged) if j.verdict == "ok"]
    ranked = weirdness is not None and len(scores) == len(judged)
    if not ranked and not theme:  # nothing to choose by: deal them all, in sampling order
        return list(range(len(judged))), len(ok)
    dealable: float = len(ok)
    if weirdness is not None and ranked:
        ok = [ok[i] for i in band_order([scores[i] for i in ok], weirdness, band_share)]
    if theme:
        words = {i: theme_words(judged[i].name or "") for i in ok}
        groups = parents if len(parents) > 1 else (theme,)
        shared = {i: sum(1 for group in groups if group & words[i]) for i in ok}
        ok = sorted(ok, key=lambda i: -shared[i])  # stable: the order above within a tier
        dealable = max(sum(1 for i in ok if shared[i]), len(ok) / max(like_choose, 1.0))
    rest = [i for i, j in enumerate(judged) if j.verdict != "ok"]
    return ok + rest, math.ceil(dealable / choose)


def _fan_out(listeners: list[PositionCallback]) -> PositionCallback:
    """One position callback that tells every caller of a shared request."""

    def notify(position: int) -> Awaitable[None] | None:
        pending: list[Awaitable[object]] = []
        for listener in listeners:
            try:
                outcome = listener(position)
            except Exception:
                log.exception("queue position callback failed")
                continue
            if inspect.isawaitable(outcome):
                pending.append(outcome)
        return _await_all(pending) if pending else None

    return notify


async def _await_all(awaitables: list[Awaitable[object]]) -> None:
    for outcome in await asyncio.gather(*awaitables, return_exceptions=True):
        if isinstance(outcome, Exception):
            log.error("queue position callback failed: %s", outcome)


@dataclass(eq=False)
class _Caller:
    """One :meth:`GenrePipeline.generate` call: what it needs, has and has thrown away."""

    count: int
    steer: bool  # called with ``like``: the leading-word cap does not apply
    theme: frozenset[str]  # the words of its ``like`` (dealt first), empty without one
    excluded: set[str]
    lead_cap: Callable[[str], int]  # the most genres of this call a leading word may start
    # Whether each of the last candidates sampled for this call was accepted (collapse rule).
    recent: deque[bool]
    on_position: PositionCallback | None = None
    # A blend's (``like: a | b``) words per parent: candidates sharing a word with both are
    # dealt before those sharing one (empty unless the condition has two parts).
    parents: tuple[frozenset[str], ...] = ()
    future: asyncio.Future[None] | None = None
    # Set whenever the call is dealt a genre or settled (what a shared stream waits on).
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    genres: list[str] = field(default_factory=list)
    taken: set[str] = field(default_factory=set)
    lead_counts: Counter[str] = field(default_factory=Counter)
    stats: Counter[str] = field(default_factory=Counter)
    candidates: list[tuple[str, str]] = field(default_factory=list)
    # Acceptable candidates its rounds held back (surplus): dealt only if it would give up.
    reserve: list[str] = field(default_factory=list)
    attempts: int = 0
    sampled: int = 0  # candidates sampled in the rounds this call took part in
    sent: int = 0  # genres already handed out by the stream
    model: str = ""

    @property
    def missing(self) -> int:
        return self.count - len(self.genres)

    @property
    def settled(self) -> bool:
        return self.future is not None and self.future.done()

    def take(self, name: str, model: str) -> None:
        self.stats["raw"] += 1
        self.candidates.append((name, "ok"))
        self.genres.append(name)
        self.taken.add(near_key(name))
        self.lead_counts[leading_word(name)] += 1
        self.model = model
        self.changed.set()

    def reclaim(self, name: str) -> None:
        """Take a candidate counted as surplus in an earlier round (see ``reserve``)."""
        self.stats["surplus"] -= 1
        self.genres.append(name)
        self.taken.add(near_key(name))
        self.lead_counts[leading_word(name)] += 1
        self.changed.set()

    def unsent(self) -> Iterator[str]:
        """The genres not handed out yet, including any dealt while this iterates."""
        while self.sent < len(self.genres):
            self.sent += 1
            yield self.genres[self.sent - 1]

    def reject(self, text: str, verdict: str) -> None:
        self.stats["raw"] += 1
        self.candidates.append((text, verdict))
        if verdict == "ok":
            self.stats["surplus"] += 1
        else:
            self.stats[f"rejected:{verdict}"] += 1

    def finish(self) -> None:
        if self.future is not None and not self.future.done():
            self.future.set_result(None)
        self.changed.set()

    def fail(self, exc: BaseException) -> None:
        if self.future is not None and not self.future.done():
            self.future.set_exception(exc)
        self.changed.set()

    def outcome(self) -> GenerationOutcome:
        stats = dict(self.stats)
        stats["attempts"] = self.attempts
        stats["delivered"] = len(self.genres)
        return GenerationOutcome(
            genres=list(self.genres), model=self.model, stats=stats, candidates=self.candidates
        )
