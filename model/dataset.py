"""Training examples from plain genre records.

Input records have the shape ``bot.store.genres.export_genres`` returns::

    {"key": "dark ambient", "display_name": "dark ambient",
     "sources": [{"source": "everynoise", "source_name": "dark ambient", "url": None,
                  "extra": {"parents": ["ambient"], "similar": [...], "x": 12, "y": 40}}]}

:func:`build_dataset` splits genres into train and validation. With a
:class:`~model.splits.HoldoutSpec` (what ``microgenre dataset build`` uses) the validation split
is the *dev* tenth of the Every Noise names and a second, *lockbox* tenth is set aside; both are
removed from every source first (:mod:`model.splits`), so neither training, ``like:`` conditions
nor the known genres name them. Without one (or when no record comes from Every Noise), the split
is a seeded hash of the near key (spelling variants of one genre never straddle it). It then caps
over-represented leading words in the training split (the "musica …" skew of the earlier
project), turns a share of the training examples into ``like:`` examples conditioned on a parent,
a similar genre or a word of the genre, or, for a genre with two or more parents, a share of
those into a *blend* of two of them (``like: a | b``, :func:`~model.textformat.blend_like`), and
writes ``train.jsonl``, ``valid.jsonl``, ``known.fingerprint`` (every real genre, the held-out
ones included: it goes with the adapter, which must never deliver a real genre as new),
``leading_words.json`` (how many training genres each leading word starts: the pipeline's
leading-word prior), ``relations.json`` (each genre's parents and similar genres, for the
evaluation's "a real related genre"), ``stats.json`` and, with the protocol,
``valid_parents.jsonl`` (dev genres and their parents: the blend pairs) and ``lockbox.jsonl``.

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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from model.artifacts import LEADING_WORDS
from model.errors import DatasetError
from model.filters import Fingerprint, LeadingPrior, near_key, validate
from model.splits import (
    DEV_PARENTS_FILE,
    LOCKBOX_FILE,
    PARENT_FIELDS,
    HeldGenre,
    HoldoutSpec,
    split_records,
    write_held_genres,
)
from model.textformat import blend_like
from scraping.normalize import clean_name, genre_key

TRAIN_FILE = "train.jsonl"
VOTE_LABELS = ("up", "down")
VALID_FILE = "valid.jsonl"
FINGERPRINT_FILE = "known.fingerprint"
LEADING_FILE = LEADING_WORDS  # the same name in a dataset folder and in an adapter folder
STATS_FILE = "stats.json"
RELATIONS_FILE = "relations.json"
# Share of training examples conditioned on a like: by default (default-v2 was built with 0.5).
LIKE_FRACTION = 0.3
# Share of the like: examples of a genre with two or more parents whose condition is a blend of
# two of them ("like: a | b"), the others keeping a single related genre or word.
BLEND_FRACTION = 0.5
# Chance that a genre with a related genre is conditioned on one of its own words instead
# ("like: malaysian" -> "malaysian traditional"): such an example teaches `like:` to repeat its
# condition verbatim, where a related genre teaches it to name relatives. Genres with no related
# genre fall back to one of their words unless it is 0.
WORD_LIKE_SHARE = 0.3


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
    dev_held: list[HeldGenre] = field(default_factory=list)  # the dev split with its parents
    lockbox: list[HeldGenre] = field(default_factory=list)
    relations: dict[str, list[str]] = field(default_factory=dict)  # genre -> related genres


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


def parent_genres(record: Mapping[str, Any]) -> list[str]:
    """The distinct parents every source of a record names (a blend needs two).

    >>> parent_genres({"key": "blackgaze", "sources": [
    ...     {"source": "rym", "extra": {"parents": ["Shoegaze", "black metal"]}},
    ...     {"source": "wikipedia", "extra": {"parents": ["shoegaze"]}}]})
    ['shoegaze', 'black metal']
    """
    own = genre_key(str(record.get("display_name") or record.get("key") or ""))
    out: dict[str, str] = {}
    for source in record.get("sources") or ():
        extra = source.get("extra") or {}
        for field_name in PARENT_FIELDS:
            value = extra.get(field_name)
            items = value.split("|") if isinstance(value, str) else value
            for item in items if isinstance(items, list) else []:
                name = clean_name(str(item))
                key = genre_key(name)
                if key and key != own and name != "done" and "|" not in name:
                    out.setdefault(key, name)
    return list(out.values())


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
    holdout: HoldoutSpec | None = None,
    blend_fraction: float = BLEND_FRACTION,
    word_like_share: float = WORD_LIKE_SHARE,
) -> Dataset:
    """Split, balance and condition the records (see the module docstring).

    ``holdout``: the held-out protocol (the dev split is the validation split, the lockbox is
    set aside, both removed from every record); ``valid_fraction`` then applies only when no
    record comes from Every Noise. ``extra_genres`` (e.g. well-voted generated genres) are added
    to the training split only (held-out names excepted), and are not counted as known real
    genres. ``blend_fraction``: the share of the ``like:`` examples of genres with two or more
    parents that are blends of two of them. ``word_like_share``: the chance that a genre with a
    related genre is conditioned on one of its own words instead (genres with none always are).

    ``source_weights`` (source name -> keep probability, default 1) thin the *training* split
    of genres only those sources list (a genre's weight is its best source's): the validation
    split is drawn first and does not depend on them, and every genre stays known.
    """
    for name, value, top in (
        ("like_fraction", like_fraction, 1),
        ("blend_fraction", blend_fraction, 1),
        ("word_like_share", word_like_share, 1),
    ):
        if not 0 <= value <= top:
            raise DatasetError(f"{name} must be in [0, 1].")
    if not 0 <= valid_fraction < 1:
        raise DatasetError("valid_fraction must be in [0, 1).")
    weights = dict(source_weights or {})
    if any(not 0 <= w <= 1 for w in weights.values()):
        raise DatasetError("source weights must be in [0, 1].")
    split = split_records(records, holdout) if holdout is not None else None
    if split is not None and not (split.dev or split.lockbox):
        split = None  # no Every Noise name to hold out: the random split
    held = split.is_held if split is not None else (lambda name: False)
    table = _GenreTable(split.records if split else records, weights)
    known = sorted(table.names.values())
    usable = {k: v for k, v in table.names.items() if validate(v) is None}
    train_names: list[str] = []
    valid_names: list[str] = []
    thinned = 0
    for key in sorted(usable):
        if split is None and _split_bucket(near_key(usable[key]), seed) < valid_fraction:
            valid_names.append(usable[key])
        elif _split_bucket(key, seed + 1) < table.weight[key]:
            train_names.append(usable[key])
        else:
            thinned += 1
    if split is not None:
        valid_names = [g.genre for g in split.dev if validate(g.genre) is None]
    for extra in extra_genres:
        display = clean_name(extra)
        key = genre_key(display)
        if display and validate(display) is None and key not in table.names and not held(display):
            train_names.append(display)
            table.related.setdefault(key, [])

    rng = random.Random(seed)
    before = leading_shares(train_names, top=15)
    cap = max(min_leading_cap, int(max_leading_share * len(train_names)))
    balanced, dropped = _balance(train_names, cap, rng)
    after = leading_shares(balanced, top=15)

    train: list[Example] = []
    like_kinds: Counter[str] = Counter()
    for name in balanced:
        like = None
        if rng.random() < like_fraction:
            key = genre_key(name)
            parents = table.parents.get(key, [])
            like, kind = _pick_like(
                name,
                table.related.get(key, []),
                rng,
                parents,
                blend_fraction,
                held,
                word_like_share=word_like_share,
            )
            if like is not None:
                like_kinds[kind] += 1
        train.append(Example(name, like))
    valid = [Example(name) for name in sorted(valid_names)]
    stats = {
        "records": len(records),
        "known_genres": len(known),
        "unusable": len(table.names) - len(usable),
        "train": len(train),
        "valid": len(valid),
        "split": "everynoise-holdout" if split else "random",
        **({"held_out": split.stats, "lockbox": len(split.lockbox)} if split else {}),
        "balance_cap": cap,
        "balance_dropped": dropped,
        "source_weights": weights,
        "source_thinned": thinned,
        "like_fraction": like_fraction,
        "blend_fraction": blend_fraction,
        "word_like_share": word_like_share,
        "blend_eligible": sum(len(table.parents.get(genre_key(n), [])) >= 2 for n in balanced),
        "like_examples": dict(like_kinds),
        "leading_before": [[w, c, round(s, 4)] for w, c, s in before],
        "leading_after": [[w, c, round(s, 4)] for w, c, s in after],
        "seed": seed,
        "valid_fraction": None if split else valid_fraction,
    }
    return Dataset(
        train=train,
        valid=valid,
        known=known,
        stats=stats,
        dev_held=list(split.dev) if split else [],
        lockbox=list(split.lockbox) if split else [],
        relations={
            table.names[k]: v for k, v in sorted(table.related.items()) if v and k in table.names
        },
    )


class _GenreTable:
    """The records by genre key: display names, related genres, parents, training weights."""

    def __init__(self, records: Sequence[Mapping[str, Any]], weights: Mapping[str, float]) -> None:
        self.names: dict[str, str] = {}
        self.related: dict[str, list[str]] = {}
        self.parents: dict[str, list[str]] = {}
        self.weight: dict[str, float] = {}
        for record in records:
            display = clean_name(str(record.get("display_name") or record.get("key") or ""))
            key = genre_key(display)
            if not key or key in self.names:
                continue
            self.names[key] = display
            self.related[key] = related_genres(record)
            self.parents[key] = parent_genres(record)
            self.weight[key] = _record_weight(record, weights)
        if not self.names:
            raise DatasetError("No genres to build a dataset from: import some genres first.")


def _balance(names: list[str], cap: int, rng: random.Random) -> tuple[list[str], int]:
    """``names`` with at most ``cap`` per leading word (a seeded sample), shuffled; and how
    many were dropped."""
    by_word: dict[str, list[str]] = {}
    for name in names:
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
    return balanced, dropped


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


def _pick_like(
    name: str,
    related: list[str],
    rng: random.Random,
    parents: Sequence[str] = (),
    blend_fraction: float = 0.0,
    held: Callable[[str], bool] = lambda word: False,
    *,
    word_like_share: float = WORD_LIKE_SHARE,
) -> tuple[str | None, str]:
    """A condition for ``name``: with two or more ``parents``, a ``blend_fraction`` chance of a
    blend of two of them; else a related genre when there is one (one of its words instead with
    chance ``word_like_share``), else one of its words (never a ``held`` one; none at all when
    ``word_like_share`` is 0)."""
    if len(parents) >= 2 and blend_fraction > 0 and rng.random() < blend_fraction:
        a, b = rng.sample(list(parents), 2)
        return blend_like(a, b), "blend"
    others = [r for r in related if genre_key(r) != genre_key(name)]
    if others and rng.random() < 1 - word_like_share:
        return rng.choice(others), "related"
    words = [w for w in name.split() if len(w) > 2 and not held(w)]
    if word_like_share > 0 and len(name.split()) > 1 and words:
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
    if dataset.stats.get("split") == "everynoise-holdout":
        write_held_genres((g for g in dataset.dev_held if g.parents), target / DEV_PARENTS_FILE)
        write_held_genres(dataset.lockbox, target / LOCKBOX_FILE)
    (target / RELATIONS_FILE).write_text(json.dumps(dataset.relations, ensure_ascii=False) + "\n")
    # The fingerprint goes with the adapter and is what a fresh bot filters with: held-out
    # genres are out of training, not out of reality, so it knows them too (the eval builds its
    # own fingerprint without them).
    real = [*dataset.known, *(e.genre for e in dataset.valid), *(g.genre for g in dataset.lockbox)]
    fp = Fingerprint.from_names(real, meta={"genres": len(set(real))})
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
