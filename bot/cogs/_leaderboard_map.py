"""`/genre map`: place invented genres among real ones on the Every Noise map.

Every Noise at Once lays out ~6,000 real genres in 2-D (down = more organic, up = more mechanical
and electric; left = denser and more atmospheric, right = spikier and bouncier). An invented genre
has no position of its own, so it is placed at the mean position of the real genres that share
the most words with it (e.g. "finnish glitch polka" lands between "finnish *" and "* polka"),
with a small deterministic offset so that genres with the same neighbours do not overlap.
Genres sharing no word with any placed real genre are left out and counted.
"""

from __future__ import annotations

import hashlib
import io
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from scraping.normalize import genre_key

STOP_WORDS = frozenset({"and", "the", "of", "music", "de", "la", "y", "n"})
NEIGHBOURS = 5


def words(name: str) -> set[str]:
    """Content words of a genre name.

    >>> sorted(words("Finnish Glitch-Polka and the Blues"))
    ['blues', 'finnish', 'glitch', 'polka']
    """
    return {w for w in genre_key(name).split() if w not in STOP_WORDS and len(w) > 1}


@dataclass(frozen=True)
class Placed:
    name: str
    x: float
    y: float
    neighbours: tuple[str, ...]


class WordIndex:
    """Real genres with a map position, indexed by word."""

    def __init__(self, positions: Mapping[str, tuple[float, float]]) -> None:
        self.positions = dict(positions)
        self.by_word: dict[str, list[str]] = defaultdict(list)
        self.words: dict[str, set[str]] = {}
        for name in self.positions:
            ws = words(name)
            self.words[name] = ws
            for w in ws:
                self.by_word[w].append(name)

    def nearest(self, name: str, k: int = NEIGHBOURS) -> list[str]:
        """Real genres sharing the most words with ``name`` (ties: shorter name first)."""
        mine = words(name)
        candidates = {real for w in mine for real in self.by_word.get(w, ())}
        scored = sorted(
            candidates,
            key=lambda real: (
                -len(mine & self.words[real]) / len(mine | self.words[real]),
                len(real),
                real,
            ),
        )
        return scored[:k]

    def place(self, name: str) -> Placed | None:
        near = self.nearest(name)
        if not near:
            return None
        xs = [self.positions[n][0] for n in near]
        ys = [self.positions[n][1] for n in near]
        digest = hashlib.sha256(name.encode()).digest()
        dx = (digest[0] / 255 - 0.5) * 40
        dy = (digest[1] / 255 - 0.5) * 40
        return Placed(name, sum(xs) / len(xs) + dx, sum(ys) / len(ys) + dy, tuple(near))


def place_all(index: WordIndex, names: Iterable[str]) -> tuple[list[Placed], list[str]]:
    placed: list[Placed] = []
    unplaced: list[str] = []
    for name in names:
        p = index.place(name)
        if p is None:
            unplaced.append(name)
        else:
            placed.append(p)
    return placed, unplaced


def render_png(index: WordIndex, placed: list[Placed], title: str) -> bytes:
    """The map as PNG bytes. Blocking (matplotlib): run it in a thread."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 8), dpi=100)
    ax = fig.add_subplot()
    if index.positions:
        xs, ys = zip(*index.positions.values(), strict=True)
        ax.scatter(xs, ys, s=2, c="#c8c8d0", linewidths=0, label="real genres (Every Noise)")
    if placed:
        ax.scatter(
            [p.x for p in placed],
            [p.y for p in placed],
            s=28,
            c="#7a5cff",
            edgecolors="white",
            linewidths=0.5,
            label="invented here",
            zorder=3,
        )
        for p in placed[:40]:
            ax.annotate(p.name, (p.x, p.y), fontsize=7, xytext=(4, 3), textcoords="offset points")
    ax.invert_yaxis()  # Every Noise y is "top" in pixels
    ax.set_xlabel("← denser, more atmospheric · spikier, bouncier →")
    ax.set_ylabel("← more organic · more mechanical, electric →")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
