"""Training examples from plain genre records.

Input records have the shape ``bot.store.genres.export_genres`` returns::

    {"key": "dark ambient", "display_name": "dark ambient",
     "sources": [{"source": "everynoise", "source_name": "dark ambient", "url": None,
                  "extra": {"parents": ["ambient"], "similar": [...], "x": 12, "y": 40}}]}

:func:`build_dataset` splits genres deterministically (by a seeded hash of their near key, so
spelling variants of one genre never straddle the split) into train and validation, caps
over-represented leading words in the training split (the "musica …" skew of the earlier
project), turns a share of the training examples into ``like:`` examples conditioned on a parent,
a similar genre or a word of the genre, and writes ``train.jsonl``, ``valid.jsonl``,
``known.fingerprint`` (every known genre, whether or not used for training),
``leading_words.json`` (how many training genres each leading word starts: the pipeline's
leading-word prior) and ``stats.json``.

>>> recs = [{"key": f"{w} rock", "display_name": f"{w} rock", "sources": []} for w in "abcdefgh"]
>>> ds = build_dataset(recs, valid_fraction=0.25, seed=1)
>>> len(ds.train) + len(ds.valid), len({e.genre for e in ds.train} & {e.genre for e in ds.valid})
(8, 0)
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from model.artifacts import LEADING_WORDS
from model.errors import DatasetError
from model.filters import Fingerprint, LeadingPrior, near_key, validate
from scraping.normalize import clean_name, genre_key

TRAIN_FILE = "train.jsonl"
VOTE_LABELS = ("up", "down")
VALID_FILE = "valid.jsonl"
FINGERPRINT_FILE = "known.fingerprint"
LEADING_FILE = LEADING_WORDS  # the same name in a dataset folder and in an adapter folder
STATS_FILE = "stats.json"
# Share of training examples conditioned on a like: by default (default-v2 was built with 0.5).
LIKE_FRACTION = 0.3


@dataclass(frozen=True)
class Example:
    genre: str
    like: str | None = None

    def text(self) -> str:
        from model.textformat import format_example

        return format_example(self.genre, self.like)


@dataclass
class Dataset:
    train: list[Example]
    valid: list[Example]
    known: list[str]
    stats: dict[str, Any] = field(default_factory=dict)


def leading_word(name: str) -> str:
    """The first word of a genre key: ``"Música Popular"`` -> ``"musica"``."""
    words = genre_key(name).split()
    return words[0] if words else ""


def leading_shares(names: Iterable[str], top: int = 10) -> list[tuple[str, int, float]]:
    """The ``top`` leading words with their counts and shares (0..1)."""
    counts = Counter(leading_word(n) for n in names)
    total = max(sum(counts.values()), 1)
    return [(w, c, c / total) for w, c in counts.most_common(top)]


def _split_bucket(key: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def related_genres(record: Mapping[str, Any]) -> list[str]:
    """Parents and similar genres the sources mention for a record."""
    out: list[str] = []
    for source in record.get("sources") or ():
        extra = source.get("extra") or {}
        for field_name in ("parents", "parent", "similar"):
            value = extra.get(field_name)
            if isinstance(value, str):
                value = [v for v in value.split("|") if v]
            if isinstance(value, list):
                out.extend(clean_name(str(v)) for v in value if str(v).strip())
    return [r for r in dict.fromkeys(out) if r and r != "done"]


def build_dataset(
    records: Sequence[Mapping[str, Any]],
    *,
    valid_fraction: float = 0.08,
    seed: int = 0,
    max_leading_share: float = 0.01,
    min_leading_cap: int = 20,
    like_fraction: float = LIKE_FRACTION,
    extra_genres: Iterable[str] = (),
    source_weights: Mapping[str, float] | None = None,
) -> Dataset:
    """Split, balance and condition the records (see the module docstring).

    ``extra_genres`` (e.g. well-voted generated genres) are added to the training split only,
    and are not counted as known real genres.

    ``source_weights`` (source name -> keep probability, default 1) thin the *training* split
    of genres only those sources list (a genre's weight is its best source's): the validation
    split is drawn first and does not depend on them, and every genre stays known.
    """
    if not 0 <= valid_fraction < 1:
        raise DatasetError("valid_fraction must be in [0, 1).")
    if not 0 <= like_fraction <= 1:
        raise DatasetError("like_fraction must be in [0, 1].")
    weights = dict(source_weights or {})
    if any(not 0 <= w <= 1 for w in weights.values()):
        raise DatasetError("source weights must be in [0, 1].")
    names: dict[str, str] = {}  # genre key -> display name
    related: dict[str, list[str]] = {}
    weight: dict[str, float] = {}
    for record in records:
        display = clean_name(str(record.get("display_name") or record.get("key") or ""))
        key = genre_key(display)
        if not key or key in names:
            continue
        names[key] = display
        related[key] = related_genres(record)
        weight[key] = _record_weight(record, weights)
    if not names:
        raise DatasetError("No genres to build a dataset from: import some genres first.")
    known = sorted(names.values())
    usable = {k: v for k, v in names.items() if validate(v) is None}
    train_names: list[str] = []
    valid_names: list[str] = []
    thinned = 0
    for key in sorted(usable):
        bucket = _split_bucket(near_key(usable[key]), seed)
        if bucket < valid_fraction:
            valid_names.append(usable[key])
        elif _split_bucket(key, seed + 1) < weight[key]:
            train_names.append(usable[key])
        else:
            thinned += 1
    for extra in extra_genres:
        display = clean_name(extra)
        if display and validate(display) is None and genre_key(display) not in names:
            train_names.append(display)
            related.setdefault(genre_key(display), [])

    rng = random.Random(seed)
    before = leading_shares(train_names, top=15)
    cap = max(min_leading_cap, int(max_leading_share * len(train_names)))
    by_word: dict[str, list[str]] = {}
    for name in train_names:
        by_word.setdefault(leading_word(name), []).append(name)
    balanced: list[str] = []
    dropped = 0
    for word in sorted(by_word):
        group = by_word[word]
        if len(group) > cap:
            group = rng.sample(group, cap)
            dropped += len(by_word[word]) - cap
        balanced.extend(group)
    rng.shuffle(balanced)
    after = leading_shares(balanced, top=15)

    train: list[Example] = []
    like_kinds: Counter[str] = Counter()
    for name in balanced:
        like = None
        if rng.random() < like_fraction:
            like, kind = _pick_like(name, related.get(genre_key(name), []), rng)
            if like is not None:
                like_kinds[kind] += 1
        train.append(Example(name, like))
    valid = [Example(name) for name in sorted(valid_names)]
    stats = {
        "records": len(records),
        "known_genres": len(known),
        "unusable": len(names) - len(usable),
        "train": len(train),
        "valid": len(valid),
        "balance_cap": cap,
        "balance_dropped": dropped,
        "source_weights": weights,
        "source_thinned": thinned,
        "like_fraction": like_fraction,
        "like_examples": dict(like_kinds),
        "leading_before": [[w, c, round(s, 4)] for w, c, s in before],
        "leading_after": [[w, c, round(s, 4)] for w, c, s in after],
        "seed": seed,
        "valid_fraction": valid_fraction,
    }
    return Dataset(train=train, valid=valid, known=known, stats=stats)


def _record_weight(record: Mapping[str, Any], weights: Mapping[str, float]) -> float:
    """The keep probability of a record in training: its best source's weight (default 1).

    >>> _record_weight({"sources": [{"source": "rym"}, {"source": "everynoise"}]}, {"rym": 0.5})
    1.0
    >>> _record_weight({"sources": [{"source": "rym"}]}, {"rym": 0.5})
    0.5
    """
    sources = [str(s.get("source") or "") for s in record.get("sources") or ()]
    if not sources:
        return 1.0
    return max(weights.get(source, 1.0) for source in sources)


def _pick_like(name: str, related: list[str], rng: random.Random) -> tuple[str | None, str]:
    """A condition for ``name``: a related genre when there is one, else one of its words."""
    others = [r for r in related if genre_key(r) != genre_key(name)]
    if others and rng.random() < 0.7:
        return rng.choice(others), "related"
    words = [w for w in name.split() if len(w) > 2]
    if len(name.split()) > 1 and words:
        return rng.choice(words), "word"
    if others:
        return rng.choice(others), "related"
    return None, ""


def write_dataset(dataset: Dataset, folder: str | Path) -> Path:
    """Write the JSONL files, the known-genre fingerprint and the statistics into ``folder``."""
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    for file, examples in ((TRAIN_FILE, dataset.train), (VALID_FILE, dataset.valid)):
        with (target / file).open("w", encoding="utf-8") as fh:
            for example in examples:
                fh.write(json.dumps(asdict(example), ensure_ascii=False) + "\n")
    fp = Fingerprint.from_names(dataset.known, meta={"genres": len(dataset.known)})
    fp.save(target / FINGERPRINT_FILE)
    prior = LeadingPrior.from_names(e.genre for e in dataset.train)
    prior.save(target / LEADING_FILE, meta={"of": "training genres (balanced)"})
    stats = {**dataset.stats, "data_hash": dataset_hash(target)}
    (target / STATS_FILE).write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n")
    return target


def read_examples(path: str | Path) -> list[Example]:
    file = Path(path)
    if not file.is_file():
        raise DatasetError(f"{file} does not exist: run `microgenre dataset build` first.")
    examples = []
    with file.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                examples.append(Example(str(data["genre"]), data.get("like")))
            except (ValueError, KeyError, TypeError):
                raise DatasetError(f"{file}:{number}: not a dataset line") from None
    return examples


@dataclass(frozen=True)
class Vote:
    """A server's verdict on one generated genre: 👍 (``up``) or 👎 (``down``)."""

    name: str
    label: str  # "up" or "down"
    like: str | None = None

    @property
    def desirable(self) -> bool:
        return self.label == "up"


def parse_vote(data: Any) -> Vote:
    """A :class:`Vote` from one votes-file object; ValueError naming what is wrong.

    >>> parse_vote({"name": "doom jazz", "label": "up", "like": None})
    Vote(name='doom jazz', label='up', like=None)
    >>> parse_vote({"name": "x", "label": "meh"})
    Traceback (most recent call last):
    ValueError: "label" must be "up" or "down", not 'meh'
    """
    if not isinstance(data, dict):
        raise ValueError("a vote is a JSON object")
    name, label, like = data.get("name"), data.get("label"), data.get("like")
    if not isinstance(name, str) or not clean_name(name):
        raise ValueError('"name" must be a non-empty string')
    if label not in VOTE_LABELS:
        raise ValueError(f'"label" must be "up" or "down", not {label!r}')
    if like is not None and not isinstance(like, str):
        raise ValueError('"like" must be a string or null')
    return Vote(clean_name(name), str(label), like or None)


def read_votes(path: str | Path) -> list[Vote]:
    """The votes of a ``--votes`` JSONL file (one :func:`parse_vote` object a line).

    Raises :class:`DatasetError` naming the file and line of the first bad line, or when the
    file is missing or holds no vote.
    """
    file = Path(path)
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{file}: cannot read the votes ({exc.__class__.__name__})") from None
    votes = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            votes.append(parse_vote(json.loads(line)))
        except ValueError as exc:  # json.JSONDecodeError is a ValueError too
            raise DatasetError(f"{file}:{number}: not a vote line ({exc})") from None
    if not votes:
        raise DatasetError(f"{file} holds no votes.")
    return votes


def write_votes(votes: Iterable[Vote], path: str | Path) -> Path:
    """Write ``votes`` as a votes file (the inverse of :func:`read_votes`)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", encoding="utf-8") as fh:
        for vote in votes:
            fh.write(json.dumps(asdict(vote), ensure_ascii=False) + "\n")
    return target


def dataset_hash(folder: str | Path) -> str:
    """sha256 over the train and validation files (the model card's data hash)."""
    digest = hashlib.sha256()
    for name in (TRAIN_FILE, VALID_FILE):
        path = Path(folder) / name
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def records_from_genres_csv(path: str | Path) -> list[dict[str, Any]]:
    """Records (the ``export_genres`` shape) from the normalised ``genres.csv`` table."""
    merged: dict[str, dict[str, Any]] = {}
    with Path(path).open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            display = clean_name(row.get("genre") or "")
            key = genre_key(display)
            if not key:
                continue
            extra: dict[str, Any] = {}
            if row.get("parent"):
                extra["parents"] = [p for p in row["parent"].split("|") if p]
            for col, name in (("x", "x"), ("y", "y"), ("everynoise1d_rank", "rank")):
                if row.get(col):
                    extra[name] = row[col]
            record = merged.setdefault(key, {"key": key, "display_name": display, "sources": []})
            record["sources"].append(
                {
                    "source": row.get("source") or "",
                    "source_name": display,
                    "url": row.get("url") or None,
                    "extra": extra,
                }
            )
    return list(merged.values())
