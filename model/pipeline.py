"""From raw completions to delivered genres: parse, validate, moderate, check novelty.

:class:`GenrePipeline` asks its backend for more candidates than it needs in one request
(oversampling by the acceptance rate it has observed so far), filters them, and asks again only
for what is still missing, a bounded number of times. It never imports torch: the backend may be
the in-process :class:`~model.sampler.LocalBackend`, the worker process or a scripted fake.

Rejection reasons counted in :attr:`GenerationOutcome.stats`: ``truncated`` (no end marker),
``malformed:<reason>`` (see :func:`model.filters.validate`), ``offensive``, ``known`` (a real
genre), ``near_known`` (a near-copy of one), ``excluded`` (generated before in this scope) and
``repeat`` (twice in this call) and ``no_genre_word`` (no word of it, nor two glued, is a word
real genres use: an invented string like "giyue" rather than a name that reads as a genre).
Without ``like``, no leading word may start more than ``max_leading_share`` of one call's genres
(at least ``min_leading_cap``): ``leading_word_cap`` counts those held back.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from model.errors import GenerationError
from model.filters import Fingerprint, Moderator, near_key, validate
from model.protocol import CompletionBackend, GenerationRequest
from model.textformat import END_MARKER, build_prompt, parse_completion
from scraping.normalize import genre_key


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
        min_request: int = 8,
        known: Iterable[str] = (),
        require_genre_word: bool = True,
        max_leading_share: float = 0.02,
        min_leading_cap: int = 5,
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
        self.min_request = min_request
        self.require_genre_word = require_genre_word
        self.max_leading_share = max_leading_share
        self.min_leading_cap = min_leading_cap
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
    ) -> GenerationOutcome:
        """``count`` distinct novel genres, none near any name in ``exclude``.

        Raises :class:`~model.errors.GenerationError` when the attempts run out first.
        """
        if count < 0:
            raise GenerationError("The number of genres must be positive.")
        temp = self.temperature if temperature is None else temperature
        excluded = {near_key(name) for name in exclude}
        seen: set[str] = set()
        stats: Counter[str] = Counter()
        genres: list[str] = []
        candidates: list[tuple[str, str]] = []
        model = ""
        prompt = build_prompt(like)
        lead_counts: Counter[str] = Counter()
        lead_cap = max(self.min_leading_cap, math.ceil(count * self.max_leading_share))
        attempt = 0
        while len(genres) < count and attempt < self.max_attempts:
            missing = count - len(genres)
            n = math.ceil(missing / max(self._yield, 0.05) * 1.1) + 2
            n = max(self.min_request, min(n, self.max_request))
            request = GenerationRequest(
                prompt=prompt,
                n=n,
                temperature=temp,
                top_p=self.top_p,
                max_tokens=self.max_tokens,
                stop=(END_MARKER,),
                seed=None if seed is None else seed + attempt,
            )
            result = await self.backend.complete(request)
            model = result.model
            finished = result.extra.get("finished") if result.extra else None
            judged = self.judge(result.texts, finished, seen | excluded)
            accepted = 0
            for j in judged:
                verdict = j.verdict
                if verdict == "repeat" and j.name is not None and near_key(j.name) in excluded:
                    verdict = "excluded"
                stats["raw"] += 1
                candidates.append((j.name or j.text, verdict))
                if verdict != "ok":
                    stats[f"rejected:{verdict}"] += 1
                    continue
                assert j.name is not None
                lead = leading_word(j.name)
                if like is None and lead_counts[lead] >= lead_cap:
                    # Counter the model's preference for frequent heads ("musica …", "rap …"):
                    # no leading word takes more than its share of one call.
                    stats["rejected:leading_word_cap"] += 1
                    candidates[-1] = (j.name, "leading_word_cap")
                    continue
                key = near_key(j.name)
                seen.add(key)
                if len(genres) < count:
                    lead_counts[lead] += 1
                    genres.append(j.name)
                    accepted += 1
                else:
                    stats["surplus"] += 1
            observed = sum(j.verdict == "ok" for j in judged) / max(len(judged), 1)
            # Smooth the estimate so one unlucky batch does not explode the next request.
            self._yield = min(1.0, max(0.05, 0.5 * self._yield + 0.5 * observed))
            attempt += 1
        stats["attempts"] = attempt
        stats["delivered"] = len(genres)
        if len(genres) < count:
            raise GenerationError(
                f"The model produced only {len(genres)} of {count} acceptable genres "
                f"in {attempt} attempts; try a higher temperature or a different 'like'."
            )
        return GenerationOutcome(
            genres=genres, model=model, stats=dict(stats), candidates=candidates
        )
