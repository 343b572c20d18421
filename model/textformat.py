"""The text format the model is trained on and sampled with.

One example is one genre, optionally conditioned on a related genre or word, or on two parent
genres at once (a *blend*, the parts joined by :data:`BLEND_SEPARATOR`)::

    genre: midwest shoegaze⏎
    like: shoegaze⏎genre: midwest shoegaze⏎
    like: shoegaze | polka⏎genre: polkagaze⏎

A ``like:`` condition of two parts (:func:`blend_like`, :data:`BLEND_SEPARATOR`) asks for a
genre that descends from both: a blend. Each part is cleaned and limited on its own.

The prompt ends with ``"genre:"``; the completion is a space, the genre and the end marker (a
newline). The model learns to emit the marker, generation stops on it, and anything that does not
end with it is rejected as truncated, so parsing is a plain cut, never a guess.

>>> build_prompt()
'genre:'
>>> build_prompt(like="Shoegaze")
'like: shoegaze\\ngenre:'
>>> parse_completion(" midwest  shoegaze\\n")
'midwest shoegaze'
>>> parse_completion(" never ends") is None
True
"""

from __future__ import annotations

from scraping.normalize import clean_name

#: The end marker every training target ends with and generation stops at.
END_MARKER = "\n"
GENRE_TAG = "genre:"
LIKE_TAG = "like:"
#: Longest accepted ``like`` text (characters, after cleaning), per part of a blend.
MAX_LIKE_CHARS = 48
#: Between the two parents of a blend's condition: ``like: a | b``.
BLEND_SEPARATOR = " | "
_BLEND_MARK = BLEND_SEPARATOR.strip()


def _clean_part(text: str) -> str:
    return clean_name(text.replace(END_MARKER, " "))[:MAX_LIKE_CHARS].strip()


def clean_like(like: str | None) -> str | None:
    """Normalise a ``like`` condition; empty or blank means no condition.

    A blend's two-part condition stays two parts, each cleaned and limited to
    :data:`MAX_LIKE_CHARS` on its own; an empty part is dropped, and parts beyond the second
    are ignored (a blend has two parents).

    >>> clean_like("  Post-Rock\\n "), clean_like("   ")
    ('post-rock', None)
    >>> clean_like("Shoegaze|  Finnish  Polka "), clean_like(" | dub")
    ('shoegaze | finnish polka', 'dub')
    >>> len(clean_like("x" * 60 + " | " + "y" * 60))
    99
    """
    if like is None:
        return None
    parts = [p for p in (_clean_part(part) for part in like.split(_BLEND_MARK)) if p]
    if not parts:
        return None
    return BLEND_SEPARATOR.join(parts[:2])


def blend_like(a: str, b: str) -> str:
    """The ``like`` condition of a blend of the genres ``a`` and ``b``.

    Each parent is cleaned like any condition (:func:`clean_like`, at most
    :data:`MAX_LIKE_CHARS`); a parent that holds the separator, or is blank, is refused.

    >>> blend_like("Shoegaze", " Finnish  Polka")
    'shoegaze | finnish polka'
    >>> build_prompt(blend_like("dub", "polka"))
    'like: dub | polka\\ngenre:'
    >>> blend_like("a | b", "c")
    Traceback (most recent call last):
    ValueError: a blend parent may not contain "|": 'a | b'
    """
    cleaned = []
    for parent in (a, b):
        if _BLEND_MARK in parent:
            raise ValueError(f'a blend parent may not contain "{_BLEND_MARK}": {parent!r}')
        part = clean_like(parent)
        if part is None:
            raise ValueError("a blend parent may not be blank")
        cleaned.append(part)
    return f"{cleaned[0]}{BLEND_SEPARATOR}{cleaned[1]}"


def build_prompt(like: str | None = None) -> str:
    """The prompt whose completion is one genre.

    >>> build_prompt("dub")
    'like: dub\\ngenre:'
    >>> build_prompt("Dub |Polka")
    'like: dub | polka\\ngenre:'
    """
    cleaned = clean_like(like)
    if cleaned is None:
        return GENRE_TAG
    return f"{LIKE_TAG} {cleaned}{END_MARKER}{GENRE_TAG}"


def format_example(genre: str, like: str | None = None) -> str:
    """One training text: the prompt, the genre and the end marker.

    >>> format_example("Dark Ambient", like="ambient")
    'like: ambient\\ngenre: dark ambient\\n'
    """
    return f"{build_prompt(like)} {clean_name(genre)}{END_MARKER}"


def parse_completion(text: str, *, require_end: bool = True) -> str | None:
    """The genre in a raw completion (the text after the prompt), or None.

    The text is cut at the first end marker. Without a marker the completion ran out of tokens
    and is rejected unless ``require_end`` is false (the backend already cut the stop string).

    >>> parse_completion(" lo-fi tape jazz\\ngenre: x")
    'lo-fi tape jazz'
    >>> parse_completion(" lo-fi", require_end=False)
    'lo-fi'
    >>> parse_completion("\\n") is None
    True
    """
    head, found, _ = text.partition(END_MARKER)
    if not found and require_end:
        return None
    name = clean_name(head)
    return name or None
