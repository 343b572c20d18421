"""Normalising genre names: one spelling per genre, variants grouped, display names kept.

Two levels:

* :func:`clean_name` is what a person would write: HTML entities decoded, Unicode NFC,
  lower-case, whitespace collapsed. It is the display name of an imported genre.
* :func:`genre_key` groups spelling variants: accents removed, hyphens, slashes and
  underscores as spaces, "&" as "and", punctuation dropped. It is the unique key of a genre in
  the store and the unit of every novelty check.

>>> clean_name("  Post-Rock &amp; Roll ")
'post-rock & roll'
>>> genre_key("Post-Rock") == genre_key("post rock") == genre_key("POST  ROCK")
True
>>> genre_key("Música Popular Brasileira")
'musica popular brasileira'
"""

from __future__ import annotations

import html
import re
import unicodedata

_WS = re.compile(r"\s+")
_SEPARATORS = re.compile(r"[-‐‑‒–—_/·•+]+")
_DROP = re.compile(r"[^\w\s'&]")


def clean_name(text: str) -> str:
    """Decode entities, NFC, lower-case and collapse whitespace.

    >>> clean_name("Drum&nbsp;and  Bass")
    'drum and bass'
    """
    text = html.unescape(text)
    text = unicodedata.normalize("NFC", text).replace("\u00a0", " ")
    return _WS.sub(" ", text).strip().lower()


def strip_accents(text: str) -> str:
    """Remove combining marks: ``"mús"`` -> ``"mus"``; keeps letters with no ASCII base.

    >>> strip_accents("électro-ñu")
    'electro-nu'
    """
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def genre_key(text: str) -> str:
    """The key that groups spelling variants of one genre.

    >>> genre_key("Rock 'n' Roll"), genre_key("rock & roll"), genre_key("Hip-Hop/Rap")
    ("rock 'n' roll", 'rock and roll', 'hip hop rap')
    """
    text = strip_accents(clean_name(text))
    text = text.replace("’", "'").replace("‘", "'")
    text = _SEPARATORS.sub(" ", text)
    text = text.replace("&", " and ")
    text = _DROP.sub("", text)
    return _WS.sub(" ", text).strip()
