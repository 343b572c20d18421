"""From raw completions to delivered genres: parse, validate, moderate, check novelty.

:class:`GenrePipeline` asks its backend for more candidates than it needs in one request
(oversampling by the acceptance rate it has observed so far), filters them, and asks again only
for what is still missing, a bounded number of times. It never imports torch: the backend may be
the in-process :class:`~model.sampler.LocalBackend`, the worker process or a scripted fake.

Rejection reasons counted in :attr:`GenerationOutcome.stats`: ``truncated`` (no end marker),
``malformed:<reason>`` (see :func:`model.filters.validate`), ``offensive``, ``known`` (a real
genre), ``near_known`` (a near-copy of one), ``excluded`` (generated before in this scope),
``repeat`` (twice in this call), ``no_genre_word`` (no word of it, nor two glued, is a word
real genres use: an invented string like "giyue" rather than a name that reads as a genre)
and ``doubled_word`` (a word said twice in a row, "jazz jazz", that no real genre doubles).
Without ``like``, no leading word may start more than ``max_leading_share`` of one call's genres
(at least ``min_leading_cap``): ``leading_word_cap`` counts those held back.

Concurrent unseeded calls with the same ``like`` and temperature share rounds: one request,
oversampled for their combined need, whose accepted candidates are dealt out in arrival order.
Thirty-two users asking for one genre each then cost one request of about 50 completions
rather than 32 requests of at least ``min_request``; the batching worker underneath still
merges requests of different prompts.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
from collections import Counter
from collections.abc import Awaitable, Collection, Iterable
from dataclasses import dataclass, field

from model.errors import GenerationError
from model.filters import Fingerprint, Moderator, near_key, validate
from model.protocol import CompletionBackend, GenerationRequest, PositionCallback
from model.textformat import END_MARKER, build_prompt, parse_completion
from scraping.normalize import genre_key

log = logging.getLogger(__name__)


@dataclass
class GenerationOutcome:
    """What one :meth:`GenrePipeline.generate` call delivered and what it threw away."""

    genres: list[str]
    model: str
    stats: dict[str, int] = field(default_factory=dict)
    # Every candidate with its fate ("ok" or the rejection reason), in sampling order.
    candidates: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class _Judged:
    text: str
    name: str | None
    verdict: str  # "ok" or a rejection reason


def leading_word(name: str) -> str:
    """The first word of a genre's key: ``"Música Popular"`` -> ``"musica"``."""
    words = genre_key(name).split()
    return words[0] if words else ""


class GenrePipeline:
    """Generate distinct, well-formed, inoffensive, novel genre names."""

    def __init__(
        self,
        backend: CompletionBackend,
        fingerprint: Fingerprint | None,
        moderator: Moderator | None = None,
        *,
        temperature: float = 0.85,
        top_p: float = 0.95,
        max_tokens: int = 16,
        oversample: float = 1.5,
        max_attempts: int = 4,
        max_request: int = 512,
        max_candidates: int | None = None,
        min_request: int = 8,
        known: Iterable[str] = (),
        require_genre_word: bool = True,
        max_leading_share: float = 0.02,
        min_leading_cap: int = 5,
        share_rounds: bool = True,
    ) -> None:
        self.backend = backend
        self.fingerprint = fingerprint if fingerprint is not None else Fingerprint()
        if known:
            self.fingerprint = self.fingerprint.union(Fingerprint.from_names(known))
        self.moderator = moderator
        self.temperature = temperature
        self.top_p = top_p
        self.max_tokens = max_tokens
        self.oversample = oversample
        self.max_attempts = max_attempts
        self.max_request = max_request
        # Most raw candidates one call may have sampled for it (None: only max_attempts binds).
        self.max_candidates = max_candidates
        self.min_request = min_request
        self.require_genre_word = require_genre_word
        self.max_leading_share = max_leading_share
        self.min_leading_cap = min_leading_cap
        self.share_rounds = share_rounds
        # Unseeded calls waiting for a shared round, and the task running those rounds, by
        # (prompt, temperature).
        self._waiting: dict[tuple[str, float], list[_Caller]] = {}
        self._drivers: dict[tuple[str, float], asyncio.Task[None]] = {}
        # Running estimate of the share of candidates that survive the filters.
        self._yield = 1.0 / oversample

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
    ) -> GenerationOutcome:
        """``count`` distinct novel genres, none near any name in ``exclude``.

        Unseeded calls with the same ``like`` and temperature that wait at the same time share
        rounds: one backend request oversampled for all of them, whose accepted candidates are
        dealt out in arrival order (never the same genre to two callers). A seeded call always
        runs alone, so its result does not depend on other callers. ``on_position`` is passed
        to the backend (see :class:`~model.protocol.CompletionBackend`) for every request this
        call's candidates come from.

        Raises :class:`~model.errors.GenerationError` when the attempts run out first, and
        whatever the backend raises for a request this call took part in.
        """
        if count < 0:
            raise GenerationError("The number of genres must be positive.")
        temp = self.temperature if temperature is None else temperature
        prompt = build_prompt(like)
        caller = _Caller(
            count=count,
            steer=like is not None,
            excluded={near_key(name) for name in exclude},
            lead_cap=max(self.min_leading_cap, math.ceil(count * self.max_leading_share)),
            on_position=on_position,
        )
        if count == 0:
            return caller.outcome()
        if seed is not None or not self.share_rounds:
            await self._run_alone(caller, prompt, temp, seed)
            return caller.outcome()
        key = (prompt, temp)
        caller.future = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(caller)
        if key not in self._drivers:
            driver = asyncio.create_task(self._drive(key, prompt, temp))
            self._drivers[key] = driver
        try:
            # Shielded: cancelling this call must not cancel the rounds others wait on.
            await asyncio.shield(caller.future)
        finally:
            if not caller.future.done():  # cancelled: rounds skip it from now on
                caller.future.cancel()
            waiting = self._waiting.get(key)
            if waiting is not None and caller in waiting:
                waiting.remove(caller)
        return caller.outcome()

    async def _run_alone(self, caller: _Caller, prompt: str, temp: float, seed: int | None) -> None:
        while caller.missing > 0:
            if self._spent(caller):
                raise caller.exhausted()
            round_seed = None if seed is None else seed + caller.attempts
            await self._round([caller], prompt, temp, round_seed)

    async def _drive(self, key: tuple[str, float], prompt: str, temp: float) -> None:
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
                    await self._round(chosen, prompt, temp, None)
                except Exception as exc:  # the backend failed: every caller of it hears why
                    for caller in chosen:
                        caller.fail(exc)
                    continue
                for caller in chosen:
                    if caller.missing <= 0:
                        caller.finish()
                    elif self._spent(caller):
                        caller.fail(caller.exhausted())
        finally:
            self._drivers.pop(key, None)
            waiting = self._waiting.pop(key, [])
            for caller in waiting:  # only when the driver itself was cancelled
                caller.fail(GenerationError("Generation was cancelled; please try again."))

    async def _round(
        self, callers: list[_Caller], prompt: str, temp: float, seed: int | None
    ) -> None:
        """One backend request for ``callers``; deal out what survives the filters."""
        missing = sum(c.missing for c in callers)
        n = math.ceil(missing / max(self._yield, 0.05) * 1.1) + 2
        n = max(self.min_request, min(n, self.max_request))
        if self.max_candidates is not None:
            left = max(self.max_candidates - c.sampled for c in callers)
            n = max(1, min(n, left))
        request = GenerationRequest(
            prompt=prompt,
            n=n,
            temperature=temp,
            top_p=self.top_p,
            max_tokens=self.max_tokens,
            stop=(END_MARKER,),
            seed=seed,
        )
        for caller in callers:
            caller.attempts += 1
            caller.sampled += n
        listeners = [c.on_position for c in callers if c.on_position is not None]
        if listeners:
            result = await self.backend.complete(request, on_position=_fan_out(listeners))
        else:
            result = await self.backend.complete(request)
        finished = result.extra.get("finished") if result.extra else None
        taken = {key for c in callers for key in c.taken}
        judged = self.judge(result.texts, finished, taken)
        for index, j in enumerate(judged):
            needy = [c for c in callers if c.missing > 0 and not c.settled]
            verdict = j.verdict
            if verdict == "ok" and j.name is not None:
                recipient, verdict = self._deal(j.name, needy)
                if recipient is not None:
                    recipient.take(j.name, result.model)
                    continue
            elif verdict == "repeat" and j.name is not None:
                key = near_key(j.name)
                if any(key in c.excluded for c in needy or callers):
                    verdict = "excluded"
            # Attribute the rejected (or surplus) candidate to someone who still waits, so
            # per-call statistics add up to what was sampled.
            owner = (needy or callers)[index % len(needy or callers)]
            owner.model = result.model
            owner.reject(j.name or j.text, verdict)
        observed = sum(j.verdict == "ok" for j in judged) / max(len(judged), 1)
        # Smooth the estimate so one unlucky batch does not explode the next request.
        self._yield = min(1.0, max(0.05, 0.5 * self._yield + 0.5 * observed))

    def _spent(self, caller: _Caller) -> bool:
        """Whether ``caller`` has used up its attempts or its candidate budget."""
        if caller.attempts >= self.max_attempts:
            return True
        return self.max_candidates is not None and caller.sampled >= self.max_candidates

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
            if not caller.steer and caller.lead_counts[lead] >= caller.lead_cap:
                # Counter the model's preference for frequent heads ("musica …", "rap …"): no
                # leading word takes more than its share of one call.
                reason = "leading_word_cap" if reason == "ok" else reason
                continue
            return caller, "ok"
        return None, reason


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
    excluded: set[str]
    lead_cap: int
    on_position: PositionCallback | None = None
    future: asyncio.Future[None] | None = None
    genres: list[str] = field(default_factory=list)
    taken: set[str] = field(default_factory=set)
    lead_counts: Counter[str] = field(default_factory=Counter)
    stats: Counter[str] = field(default_factory=Counter)
    candidates: list[tuple[str, str]] = field(default_factory=list)
    attempts: int = 0
    sampled: int = 0  # candidates sampled in the rounds this call took part in
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

    def reject(self, text: str, verdict: str) -> None:
        self.stats["raw"] += 1
        self.candidates.append((text, verdict))
        if verdict == "ok":
            self.stats["surplus"] += 1
        else:
            self.stats[f"rejected:{verdict}"] += 1

    def exhausted(self) -> GenerationError:
        return GenerationError(
            f"The model produced only {len(self.genres)} of {self.count} acceptable genres "
            f"in {self.attempts} attempts ({self.sampled} candidates); try a higher temperature "
            "or a different 'like'.",
            partial=self.outcome(),
        )

    def finish(self) -> None:
        if self.future is not None and not self.future.done():
            self.future.set_result(None)

    def fail(self, exc: BaseException) -> None:
        if self.future is not None and not self.future.done():
            self.future.set_exception(exc)

    def outcome(self) -> GenerationOutcome:
        stats = dict(self.stats)
        stats["attempts"] = self.attempts
        stats["delivered"] = len(self.genres)
        return GenerationOutcome(
            genres=list(self.genres), model=self.model, stats=stats, candidates=self.candidates
        )
