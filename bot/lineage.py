"""Lineage: how a genre was asked for, stored with each generation.

``kind`` is one of :data:`KINDS`; ``parent_id`` is the generation a variation or a weirder take
came from; ``text`` is the condition: the ``like`` text, the source's name for a variation,
``"a | b"`` (:data:`model.textformat.BLEND_SEPARATOR`) for a blend. Rows stored before lineage
existed have none and count as ``new``.

>>> Lineage.of_like("dub")
Lineage(kind='like', parent_id=None, text='dub')
>>> Lineage("blend", text="dub | polka").describe()
'blended from *dub* and *polka*'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from model.textformat import BLEND_SEPARATOR

NEW = "new"
LIKE = "like"
VARIATION = "variation"
WEIRDER = "weirder"
BLEND = "blend"
DAILY = "daily"
KINDS = (NEW, LIKE, VARIATION, WEIRDER, BLEND, DAILY)


def _plain(text: str) -> str:
    return text


@dataclass(frozen=True)
class Lineage:
    """See the module docstring."""

    kind: str = NEW
    parent_id: int | None = None
    text: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown lineage kind {self.kind!r}: one of {', '.join(KINDS)}")

    @classmethod
    def of_like(cls, like: str | None) -> Lineage:
        """The lineage of a plain `/genre new`, with or without ``like``."""
        return cls(LIKE, text=like) if like else cls(NEW)

    @classmethod
    def stored(cls, kind: str | None, parent_id: int | None, text: str | None) -> Lineage:
        """From the store's columns (NULL kind: a row from before lineage, ``new``)."""
        return cls(kind or NEW, parent_id, text)

    def describe(self, escape: Callable[[str], str] = _plain) -> str | None:
        """A phrase for `/genre check` (None for a plain new genre); names go through
        ``escape``.

        >>> Lineage(VARIATION, 3, "bubblegrunge").describe()
        'a variation of *bubblegrunge*'
        """
        text = escape(self.text) if self.text else "?"
        if self.kind == LIKE:
            return f"asked for like *{text}*"
        if self.kind == VARIATION:
            return f"a variation of *{text}*"
        if self.kind == WEIRDER:
            return f"a weirder take on *{text}*"
        if self.kind == BLEND:
            parents = (self.text or "?").split(BLEND_SEPARATOR.strip(), 1)
            a, b = (escape(p.strip()) for p in [*parents, "?"][:2])
            return f"blended from *{a}* and *{b}*"
        if self.kind == DAILY:
            return "a genre of the day"
        return None
