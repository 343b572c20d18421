"""The held-out protocol: a dev and a lockbox tenth of the Every Noise names, kept out of every
source (issue 19).

The real check of a genre generator is how many real genres it re-invents that it never saw,
and the real genres people compare it with are Every Noise names. So the held-out genres are
drawn from the names that an ``everynoise`` source lists, grouped by :func:`loose_key` (accents
stripped, lower-cased, every run of other characters one space), and each is removed from
*every* source: a record whose name (or any source's spelling of it) has a held-out key is
dropped whatever its source, parent lists re-attach a removed parent's children to the removed
parent's own parents (in the same source's tree where it has one), and other relation lists
(similar, subgenres, fusions, ...) drop it. Nothing the training split or the known-genre
fingerprint is built from then names a held-out genre.

Two disjoint splits, each a ``fraction`` (a tenth) of the Every Noise keys:

* **lockbox**: the keys whose hash with ``lockbox_seed`` falls below ``fraction``. The seed is
  fixed (:data:`LOCKBOX_SEED`), so the lockbox does not move when experiments change the dev
  seed. Only ``microgenre eval --lockbox`` reads it (:func:`read_lockbox`), and every read is
  logged in the adapter's model card.
* **dev**: among the other keys (and none that is a spelling variant of a lockbox one), those
  whose hash with ``dev_seed`` falls below ``fraction / (1 - fraction)``: again a tenth of all.
  It is the dataset's validation split, for experiments.

>>> recs = [{"key": f"w{i} pop", "display_name": f"w{i} pop",
...          "sources": [{"source": "everynoise", "extra": {}}]} for i in range(40)]
>>> split = split_records(recs, HoldoutSpec(dev_seed=0))
>>> len(split.dev), len(split.lockbox), len(split.records)
(2, 3, 35)
>>> {g.genre for g in split.dev} & {g.genre for g in split.lockbox}
set()
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.errors import DatasetError
from scraping.normalize import clean_name, genre_key

#: The lockbox's seed. Never change it once an adapter reported lockbox numbers.
LOCKBOX_SEED = 1919
#: Share of the Every Noise names in each held-out split.
HELD_OUT_FRACTION = 0.1
EVERYNOISE = "everynoise"
#: The dev split's genres with their parents (the blend evaluation's pairs), in a dataset folder.
DEV_PARENTS_FILE = "valid_parents.jsonl"
#: The lockbox split, in a dataset folder: read only by ``microgenre eval --lockbox``.
LOCKBOX_FILE = "lockbox.jsonl"
#: Fields of a source's ``extra`` that name parent genres (a list, or a "|"-separated string).
PARENT_FIELDS = ("parents", "parent")
#: Fields that name other related genres; a held-out name is dropped from them.
RELATION_FIELDS = (
    "similar",
    "opposite",
    "subgenres",
    "derivatives",
    "fusion_genres",
    "origins",
    "derived_from",
    "fusion_of",
    "alias_of",
)

_NON_ALNUM = re.compile(r"[^0-9a-z]+")


def loose_key(name: str) -> str:
    """Accents stripped (NFKD, combining marks dropped), lower-cased, every run of
    non-alphanumerics one space, stripped.

    >>> loose_key("Música  Popular-Brasileira!"), loose_key("R&B"), loose_key("rock 'n' roll")
    ('musica popular brasileira', 'r b', 'rock n roll')
    """
    decomposed = unicodedata.normalize("NFKD", name)
    text = "".join(ch for ch in decomposed if not unicodedata.combining(ch)).lower()
    return _NON_ALNUM.sub(" ", text).strip()


def name_keys(name: str) -> frozenset[str]:
    """The keys under which ``name`` is held out: its loose key, and that of its store key
    (``&`` read as ``and``), so "drum & bass" and "drum and bass" go together.

    >>> sorted(name_keys("Drum & Bass"))
    ['drum and bass', 'drum bass']
    """
    return frozenset(k for k in (loose_key(name), loose_key(genre_key(name))) if k)


def _bucket(key: str, seed: int) -> float:
    digest = hashlib.sha256(f"holdout:{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class HoldoutSpec:
    """How the held-out splits are drawn (see the module docstring)."""

    dev_seed: int = 0
    lockbox_seed: int = LOCKBOX_SEED
    fraction: float = HELD_OUT_FRACTION

    def __post_init__(self) -> None:
        if not 0 < self.fraction < 0.5:
            raise DatasetError("the held-out fraction must be above 0 and below 0.5.")
        if self.dev_seed == self.lockbox_seed:
            raise DatasetError(
                f"the dev seed must differ from the lockbox seed ({self.lockbox_seed})."
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "dev_seed": self.dev_seed,
            "lockbox_seed": self.lockbox_seed,
            "fraction": self.fraction,
        }


@dataclass(frozen=True)
class HeldGenre:
    """A held-out genre and its parents (held-out parents replaced by their own)."""

    genre: str
    parents: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"genre": self.genre, "parents": list(self.parents)}

    @classmethod
    def from_dict(cls, data: Any) -> HeldGenre:
        if not isinstance(data, dict) or not isinstance(data.get("genre"), str):
            raise ValueError('a held-out line is an object with a "genre" string')
        parents = data.get("parents") or []
        if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
            raise ValueError('"parents" must be a list of strings')
        return cls(data["genre"], tuple(parents))


@dataclass
class HeldOutSplit:
    """The records with the held-out genres removed, and the two splits."""

    records: list[dict[str, Any]]
    dev: list[HeldGenre]
    lockbox: list[HeldGenre]
    keys: frozenset[str]  # every key of every held-out name (dev and lockbox)
    stats: dict[str, Any] = field(default_factory=dict)

    def is_held(self, name: str) -> bool:
        """Whether ``name`` is (a spelling of) a held-out genre."""
        return not name_keys(name).isdisjoint(self.keys)


def _names(value: Any) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split("|") if v.strip()]
    if isinstance(value, list):
        return [str(v).strip() for v in value if str(v).strip()]
    return []


def _record_names(record: Mapping[str, Any]) -> list[str]:
    names = [str(record.get("display_name") or ""), str(record.get("key") or "")]
    names += [str(s.get("source_name") or "") for s in record.get("sources") or ()]
    return [n for n in names if n.strip()]


def _everynoise_names(records: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Loose key -> display name (the first in key order) of every Every Noise name."""
    out: dict[str, str] = {}
    for record in records:
        display = clean_name(str(record.get("display_name") or record.get("key") or ""))
        for source in record.get("sources") or ():
            if source.get("source") == EVERYNOISE:
                name = clean_name(str(source.get("source_name") or display))
                key = loose_key(name)
                if key and (key not in out or name < out[key]):
                    out[key] = name
    return out


def draw_keys(names: Mapping[str, str], spec: HoldoutSpec) -> tuple[list[str], list[str]]:
    """The dev and lockbox loose keys among ``names`` (loose key -> name), sorted."""
    lockbox = sorted(k for k in names if _bucket(k, spec.lockbox_seed) < spec.fraction)
    taken = {v for k in lockbox for v in name_keys(names[k])}
    dev_share = spec.fraction / (1 - spec.fraction)
    dev = sorted(
        k
        for k in names
        if k not in lockbox
        and name_keys(names[k]).isdisjoint(taken)
        and _bucket(k, spec.dev_seed) < dev_share
    )
    return dev, lockbox


class _Tree:
    """Parent lists of every record, per source and over all sources, by loose key."""

    def __init__(self, records: Sequence[Mapping[str, Any]]) -> None:
        self.by_source: dict[tuple[str, str], list[str]] = {}
        self.any_source: dict[str, list[str]] = {}
        for record in records:
            keys = {loose_key(n) for n in _record_names(record)}
            for source in record.get("sources") or ():
                extra = source.get("extra") or {}
                parents = [p for f in PARENT_FIELDS for p in _names(extra.get(f))]
                for key in keys:
                    self.by_source.setdefault((str(source.get("source")), key), []).extend(parents)
                    self.any_source.setdefault(key, []).extend(parents)

    def resolve(
        self, source: str, parent: str, held: frozenset[str], seen: frozenset[str]
    ) -> list[str]:
        """``parent``, or when it is held out, its own parents (recursively)."""
        if name_keys(parent).isdisjoint(held):
            return [parent]
        key = loose_key(parent)
        if key in seen:
            return []
        above = self.by_source.get((source, key)) or self.any_source.get(key, [])
        out: list[str] = []
        for grand in dict.fromkeys(above):
            out.extend(self.resolve(source, grand, held, seen | {key}))
        return out


def _dedupe(names: Iterable[str], own: frozenset[str]) -> list[str]:
    out: dict[str, str] = {}
    for name in names:
        key = loose_key(name)
        if key and key not in own and key not in out:
            out[key] = name
    return list(out.values())


def split_records(records: Sequence[Mapping[str, Any]], spec: HoldoutSpec) -> HeldOutSplit:
    """Draw the dev and lockbox splits and remove them from every record (module docstring)."""
    everynoise = _everynoise_names(records)
    dev_keys, lockbox_keys = draw_keys(everynoise, spec)
    held = frozenset(v for k in dev_keys + lockbox_keys for v in name_keys(everynoise[k]))
    tree = _Tree(records)
    kept: list[dict[str, Any]] = []
    removed: dict[str, int] = {}
    reattached = dropped = 0
    for record in records:
        if any(not name_keys(n).isdisjoint(held) for n in _record_names(record)):
            for source in record.get("sources") or ():
                name = str(source.get("source") or "")
                removed[name] = removed.get(name, 0) + 1
            continue
        own = frozenset(loose_key(n) for n in _record_names(record))
        sources = []
        for source in record.get("sources") or ():
            extra = dict(source.get("extra") or {})
            for name in PARENT_FIELDS:
                if name in extra:
                    before = _names(extra[name])
                    after: list[str] = []
                    for parent in before:
                        resolved = tree.resolve(
                            str(source.get("source")), parent, held, frozenset()
                        )
                        reattached += resolved != [parent]
                        after.extend(resolved)
                    extra[name] = _dedupe(after, own)
            for name in RELATION_FIELDS:
                if name in extra and isinstance(extra[name], (list, str)):
                    before = _names(extra[name])
                    extra[name] = [n for n in before if name_keys(n).isdisjoint(held)]
                    dropped += len(before) - len(extra[name])
            sources.append({**source, "extra": extra})
        kept.append({**record, "sources": sources})

    def genres(keys: list[str]) -> list[HeldGenre]:
        out = []
        for key in keys:
            name = everynoise[key]
            parents = tree.any_source.get(key, [])
            resolved = [r for p in parents for r in tree.resolve("", p, held, frozenset({key}))]
            out.append(HeldGenre(name, tuple(_dedupe(resolved, name_keys(name)))))
        return out

    stats = {
        **spec.to_dict(),
        "everynoise_names": len(everynoise),
        "dev": len(dev_keys),
        "lockbox": len(lockbox_keys),
        "records_removed": len(records) - len(kept),
        "removed_by_source": dict(sorted(removed.items())),
        "parents_reattached": reattached,
        "relations_dropped": dropped,
    }
    return HeldOutSplit(kept, genres(dev_keys), genres(lockbox_keys), held, stats)


def write_held_genres(genres: Iterable[HeldGenre], path: Path) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for genre in genres:
            fh.write(json.dumps(genre.to_dict(), ensure_ascii=False) + "\n")
    return path


def _read_held_genres(path: Path) -> list[HeldGenre]:
    if not path.is_file():
        raise DatasetError(
            f"{path} does not exist: rebuild the dataset (`microgenre dataset build`)."
        )
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                out.append(HeldGenre.from_dict(json.loads(line)))
            except ValueError as exc:
                raise DatasetError(f"{path}:{number}: not a held-out line ({exc})") from None
    return out


def read_dev_parents(folder: str | Path) -> list[HeldGenre]:
    """The dev genres that have parents (empty for a dataset built without the protocol)."""
    path = Path(folder) / DEV_PARENTS_FILE
    return _read_held_genres(path) if path.is_file() else []


def read_lockbox(folder: str | Path) -> list[HeldGenre]:
    """The lockbox split. Only ``microgenre eval --lockbox`` calls this, after logging the
    read in the adapter's model card: nothing that trains or selects may read it."""
    return _read_held_genres(Path(folder) / LOCKBOX_FILE)
