"""Pure checks on candidate genre names: well-formedness, moderation and novelty.

Nothing here imports torch; the moderation classifier is loaded on first use.

>>> validate("midwest shoegaze") is None
True
>>> validate("this is a sentence. really.")
'sentence'
>>> near_key("Rock-Pops") == near_key("pop rock")
True
>>> fp = Fingerprint.from_names(["post-rock", "dream pop"])
>>> "Post Rock" in fp, "rock post" in fp, "space rock" in fp
(True, True, False)
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

from scraping.normalize import clean_name, genre_key

MAX_WORDS = 6
MAX_CHARS = 48

_MARKUP = re.compile(r"[<>\[\]{}|=*_#`~^\\@$%]|https?:|www\.|\.(com|org|net)\b")
_SENTENCE = re.compile(r"[.!?;:]\s|[.!?;:,]$|\s[.!?;:,]|,\s\S+\s\S+\s")
_ALLOWED = re.compile(r"^[\w\s'&+\-/.!(),:]+$")
_REPEAT_WORD = re.compile(r"\b(\w+)( \1\b){2,}")
_PROMPT_TAGS = ("genre:", "like:")

# Words that are not a genre on their own ("music", "song"): refused as one-word names.
_GENERIC = frozenset(
    {
        "music",
        "musica",
        "musique",
        "musik",
        "muzica",
        "muzyka",
        "song",
        "songs",
        "sound",
        "sounds",
        "style",
        "band",
        "bands",
        "tune",
        "tunes",
        "beat",
        "beats",
        "genre",
        "other",
    }
)

# Words dropped by near_key: joiners that spell the same genre in different ways.
_FILLERS = frozenset({"and", "n", "'n'", "'n", "n'", "the"})


def validate(name: str) -> str | None:
    """Why ``name`` is not a well-formed genre name, or None when it is.

    Well-formed: 1–6 words, at most 48 characters, letters in it, no sentence punctuation,
    no markup or URLs, no prompt tags, no word repeated three times, not one generic word
    ("music", "song").

    >>> [validate(x) for x in ["", "a b c d e f g", "<b>rock</b>", "genre: rock", "rock rock rock"]]
    ['empty', 'too_many_words', 'markup', 'prompt_tag', 'repetition']
    >>> validate("drum & bass"), validate("k-pop"), validate("rock 'n' roll")
    (None, None, None)
    """
    text = clean_name(name)
    if not text:
        return "empty"
    if len(text) > MAX_CHARS:
        return "too_long"
    words = text.split(" ")
    if len(words) > MAX_WORDS:
        return "too_many_words"
    if _MARKUP.search(text):
        return "markup"
    if any(tag in text for tag in _PROMPT_TAGS) or words[0] == "genre":
        return "prompt_tag"
    if not _ALLOWED.match(text):
        return "bad_characters"
    if not any(ch.isalpha() for ch in text):
        return "no_letters"
    if _SENTENCE.search(text):
        return "sentence"
    if text.count("(") != text.count(")"):
        return "unbalanced"
    if _REPEAT_WORD.search(text):
        return "repetition"
    if len(words) == 1 and genre_key(text) in _GENERIC:
        return "generic"
    return None


def _singular(word: str) -> str:
    """A crude singular: enough to catch ``beats``/``beat`` and ``melodies``/``melody``.

    >>> [_singular(w) for w in ["beats", "melodies", "bass", "chorus", "blues", "pop"]]
    ['beat', 'melody', 'bass', 'chorus', 'blue', 'pop']
    """
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def theme_words(text: str) -> frozenset[str]:
    """The words of ``text`` that a genre may share with it to honour a ``like:`` condition:
    singular, longer than two letters, not a joiner ("and", "the").

    >>> sorted(theme_words("Indigenous American Músic")), sorted(theme_words("dj & mc beats"))
    (['american', 'indigenous', 'music'], ['beat'])
    """
    words = genre_key(text).split()
    return frozenset(_singular(w) for w in words if len(w) > 2 and w not in _FILLERS)


def near_key(name: str) -> str:
    """A coarse key under which near-copies of a genre collide.

    Built on :func:`scraping.normalize.genre_key` (accents, case, hyphens, ``&``): words are
    singularised, joiners ("and", "n", "the") and a trailing generic "music" dropped, the words
    sorted and glued together, so reordered words, plural, hyphen, spacing and accent variants
    all map to one key.

    >>> near_key("Hip-Hop") == near_key("hiphop") == near_key("hop hip")
    True
    >>> near_key("Drum & Bass") == near_key("drum n bass") == near_key("drums and bass")
    True
    >>> near_key("Música Sertaneja") == near_key("sertaneja musica")
    True
    >>> near_key("polka music") == near_key("polka"), near_key("music")
    (True, 'music')
    """
    words = [w.strip("'") for w in genre_key(name).split()]
    words = [w for w in words if w and w not in _FILLERS]
    if len(words) > 1 and words[-1] == "music":
        words.pop()
    return "".join(sorted(_singular(w) for w in words))


def glued_keys(name: str) -> set[str]:
    """Near keys of ``name`` read as one glued word, for spacing variants :func:`near_key` misses.

    ``near_key`` sorts words, so "neo folk" ("folkneo") and "neofolk" differ. The keys returned
    here are the words glued in their own order, and every split of that glued string into two
    parts, sorted and glued as :func:`near_key` would: a candidate matching a known genre under
    any of them is a spacing or hyphen variant of it.

    >>> near_key("neofolk") in glued_keys("neo-folk"), near_key("neo folk") in glued_keys("neofolk")
    (True, True)
    """
    words = [_singular(w.strip("'")) for w in genre_key(name).split()]
    words = [w for w in words if w and w not in _FILLERS]
    glued = "".join(words)
    keys = {glued}
    for cut in range(2, len(glued) - 1):
        keys.add("".join(sorted((glued[:cut], glued[cut:]))))
    return keys


def doubled_words(key: str) -> set[str]:
    """Words a genre key says twice in a row.

    >>> sorted(doubled_words("deep deep house")), doubled_words("new wave of new wave")
    (['deep'], set())
    """
    words = key.split()
    return {a for a, b in pairwise(words) if a == b}


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


def leading_word(name: str) -> str:
    """The first word of a genre's key: ``"Música Popular"`` -> ``"musica"``."""
    words = genre_key(name).split()
    return words[0] if words else ""


@dataclass(frozen=True)
class LeadingPrior:
    """How many training genres each leading word starts: the per-call cap on leading words.

    A derived statistic of the training names (no names, only their first words), shipped next
    to the fingerprint as ``leading_words.json``. A call of ``count`` genres may give a leading
    word at most ``ratio`` times its training share, and never fewer than ``floor`` genres (so
    a call of 5 genres still works, and a word the training never led with gets the floor).

    >>> prior = LeadingPrior.from_names(["deep house", "deep techno", "acid jazz", "dub"])
    >>> prior.share("deep"), prior.cap("deep", 100, ratio=1.5, floor=5)
    (0.5, 75)
    >>> prior.cap("deep", 4, ratio=1.5, floor=1), prior.cap("zouk", 100, ratio=1.5, floor=5)
    (3, 5)
    """

    counts: Mapping[str, int]
    total: int

    @classmethod
    def from_names(cls, names: Iterable[str]) -> LeadingPrior:
        counts = Counter(leading_word(n) for n in names)
        counts.pop("", None)
        return cls(dict(counts), sum(counts.values()))

    def share(self, word: str) -> float:
        """The share of training genres that ``word`` leads (0 for a word it never leads)."""
        return self.counts.get(word, 0) / self.total if self.total else 0.0

    def cap(self, word: str, count: int, *, ratio: float, floor: int) -> int:
        """Most genres of a call of ``count`` that ``word`` may lead."""
        return max(floor, math.floor(ratio * self.share(word) * count + 1e-9))

    def save(self, path: str | Path, meta: Mapping[str, Any] | None = None) -> Path:
        """Write ``{"total", "counts", **meta}`` as JSON (atomically), counts largest first."""
        target = Path(path)
        ordered = dict(sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0])))
        body = {**(meta or {}), "total": self.total, "counts": ordered}
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(json.dumps(body, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
        tmp.replace(target)
        return target

    @classmethod
    def load(cls, path: str | Path) -> LeadingPrior:
        """Read a file written by :meth:`save`; ValueError when it is not one."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(data, dict) or not isinstance(data.get("counts"), dict):
            raise ValueError(f"{path} is not a leading-word prior file")
        counts = {str(w): int(c) for w, c in data["counts"].items()}
        return cls(counts, int(data.get("total", sum(counts.values()))))


_MAGIC = b"MGFP1\n"


class Fingerprint:
    """A compact set of 64-bit hashes of the normalised names of known genres.

    Three hash sets: exact keys (:func:`genre_key`), near keys (:func:`near_key`) and the words
    of the known genres. It holds no names, ships with an adapter (about 20 bytes per genre) and
    answers whether a candidate is a known genre or a near-copy of one, and whether it uses any
    word real genres use, on a machine that has no dataset.
    """

    def __init__(
        self,
        exact: Iterable[int] = (),
        near: Iterable[int] = (),
        meta: dict[str, Any] | None = None,
        words: Iterable[int] = (),
        doubled: Iterable[int] = (),
        leading: LeadingPrior | None = None,
    ) -> None:
        self._exact = frozenset(exact)
        self._near = frozenset(near)
        self._words = frozenset(words)
        self._doubled = frozenset(doubled)
        self.meta: dict[str, Any] = dict(meta or {})
        # The adapter's leading-word prior (``leading_words.json``), when it ships one.
        self.leading = leading

    @classmethod
    def from_names(cls, names: Iterable[str], meta: dict[str, Any] | None = None) -> Fingerprint:
        exact: set[int] = set()
        near: set[int] = set()
        words: set[int] = set()
        doubled: set[int] = set()
        for name in names:
            key = genre_key(name)
            if not key:
                continue
            exact.add(_hash(key))
            near.add(_hash(near_key(name)))
            words.update(_hash(w) for w in key.split())
            doubled.update(_hash(w) for w in doubled_words(key))
        return cls(exact, near, meta, words, doubled)

    @property
    def has_words(self) -> bool:
        return bool(self._words)

    def grounded(self, name: str) -> bool:
        """Whether a word of ``name`` is a word real genres use, or two such words glued.

        A genre with no such word is an invented string ("giyue", "obsoud"), not a name that
        reads as a genre. True when the fingerprint holds no words (an old file).

        >>> fp = Fingerprint.from_names(["bubble pop", "grunge"])
        >>> fp.grounded("toucan grunge"), fp.grounded("bubblegrunge"), fp.grounded("obsoud")
        (True, True, False)
        """
        if not self._words:
            return True
        for word in genre_key(name).split():
            if _hash(word) in self._words or _hash(_singular(word)) in self._words:
                return True
            for cut in range(3, len(word) - 2):
                if _hash(word[:cut]) in self._words and _hash(word[cut:]) in self._words:
                    return True
        return False

    def doubles_like_real(self, name: str) -> bool:
        """Whether each word ``name`` says twice in a row is one real genres double too.

        Real genres reduplicate a few words (ye ye, kwassa kwassa, deep deep house); a model
        saying "jazz jazz" has stuttered. A fingerprint that knows no doubled word (also one
        from a file written before doubled words were recorded) lets none through.

        >>> fp = Fingerprint.from_names(["deep deep house", "jazz"])
        >>> fp.doubles_like_real("deep deep techno"), fp.doubles_like_real("jazz jazz")
        (True, False)
        >>> fp.doubles_like_real("jazz fusion")
        True
        """
        return all(_hash(word) in self._doubled for word in doubled_words(genre_key(name)))

    def __len__(self) -> int:
        return len(self._exact)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.match(name) is not None

    def match(self, name: str) -> str | None:
        """``"known"`` (same key as a known genre), ``"near_known"`` (a near-copy) or None."""
        key = genre_key(name)
        if _hash(key) in self._exact:
            return "known"
        if _hash(near_key(name)) in self._near:
            return "near_known"
        if any(_hash(k) in self._near for k in glued_keys(name)):
            return "near_known"
        return None

    def union(self, other: Fingerprint) -> Fingerprint:
        meta = {**self.meta, "merged": True}
        return Fingerprint(
            self._exact | other._exact,
            self._near | other._near,
            meta,
            self._words | other._words,
            self._doubled | other._doubled,
            self.leading if self.leading is not None else other.leading,
        )

    def save(self, path: str | Path) -> Path:
        """Write the set atomically: magic, a JSON header line, then sorted big-endian u64s."""
        target = Path(path)
        header = {
            **self.meta,
            "exact": len(self._exact),
            "near": len(self._near),
            "words": len(self._words),
            "doubled": len(self._doubled),
        }
        body = b"".join(struct.pack(">Q", h) for h in sorted(self._exact))
        body += b"".join(struct.pack(">Q", h) for h in sorted(self._near))
        body += b"".join(struct.pack(">Q", h) for h in sorted(self._words))
        body += b"".join(struct.pack(">Q", h) for h in sorted(self._doubled))
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_bytes(_MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + body)
        tmp.replace(target)
        return target

    @classmethod
    def load(cls, path: str | Path) -> Fingerprint:
        data = Path(path).read_bytes()
        if not data.startswith(_MAGIC):
            raise ValueError(f"{path} is not a genre fingerprint file")
        header_end = data.index(b"\n", len(_MAGIC))
        header = json.loads(data[len(_MAGIC) : header_end])
        body = data[header_end + 1 :]
        n_exact, n_near = int(header.pop("exact")), int(header.pop("near"))
        # Files written before words (or doubled words) were recorded lack those sections.
        n_words = int(header.pop("words", 0))
        n_doubled = int(header.pop("doubled", 0))
        if len(body) != 8 * (n_exact + n_near + n_words + n_doubled):
            raise ValueError(f"{path} is truncated or corrupt")
        values = [v for (v,) in struct.iter_unpack(">Q", body)]
        words_end = n_exact + n_near + n_words
        return cls(
            values[:n_exact],
            values[n_exact : n_exact + n_near],
            header,
            values[n_exact + n_near : words_end],
            values[words_end:],
        )


# A few terms the statistical classifier under-rates; checked as whole words.
_BLOCKED_WORDS = frozenset(
    {
        "rape",
        "rapist",
        "nazi",
        "nazis",
        "hitler",
        "kkk",
        "genocide",
        "pedo",
        "paedo",
        "incest",
        "coon",
        "coons",
        "nigger",
        "niggers",
        "nigga",
        "faggot",
        "fag",
        "kike",
        "spic",
        "chink",
        "gook",
        "wetback",
        "tranny",
        "retard",
        "retarded",
    }
)


class Moderator:
    """Offensive-language filter: the ``alt-profanity-check`` classifier plus a short blocklist.

    The classifier (scikit-learn) is loaded on the first call.

    >>> Moderator(threshold=0.9).is_offensive("nazi polka")
    True
    """

    def __init__(self, threshold: float = 0.9) -> None:
        self.threshold = threshold
        self._predict: Any = None

    def _classifier(self) -> Any:
        if self._predict is None:
            from profanity_check import predict_prob

            self._predict = predict_prob
        return self._predict

    def scores(self, names: list[str]) -> list[float]:
        """Offensiveness in 0..1 per name (1.0 for blocklisted words)."""
        if not names:
            return []
        probs = self._classifier()(names)
        out = []
        for name, prob in zip(names, probs, strict=True):
            blocked = any(w in _BLOCKED_WORDS for w in genre_key(name).split())
            out.append(1.0 if blocked else float(prob))
        return out

    def flags(self, names: list[str]) -> list[bool]:
        return [score >= self.threshold for score in self.scores(names)]

    def is_offensive(self, name: str) -> bool:
        return self.flags([name])[0]
