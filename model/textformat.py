"""The text format the model is trained on and sampled with.

One example is one genre, optionally conditioned on a related genre or word, or on two parent
genres at once (a *blend*, the parts joined by :data:`BLEND_SEPARATOR`)::

    genre: midwest shoegaze⏎
    like: shoegaze⏎genre: midwest shoegaze⏎
    like: shoegaze | black metal⏎genre: blackgaze⏎

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
#: Longest accepted ``like`` text (characters, after cleaning; each part of a blend).
MAX_LIKE_CHARS = 48
#: Joins the two parents of a blend condition: ``like: shoegaze | black metal``.
BLEND_SEPARATOR = " | "


def _clean_part(text: str) -> str:
    return clean_name(text.replace(END_MARKER, " "))[:MAX_LIKE_CHARS].strip()


def clean_like(like: str | None) -> str | None:
    """Normalise a ``like`` condition; empty or blank means no condition.

    A condition with a ``|`` is a blend of two parents: each part is cleaned and cut to
    :data:`MAX_LIKE_CHARS` separately, blank parts are dropped and parts after the second are
    ignored (the model is trained on two).

    >>> clean_like("  Post-Rock\\n "), clean_like("   ")
    ('post-rock', None)
    >>> clean_like("Shoegaze|black  metal"), clean_like("dub | ")
    ('shoegaze | black metal', 'dub')
    """
    if like is None:
        return None
    parts = [part for part in map(_clean_part, like.split("|")) if part]
    if not parts:
        return None
    return BLEND_SEPARATOR.join(parts[:2])


def blend_like(a: str, b: str) -> str:
    """The ``like`` condition of a genre descended from both ``a`` and ``b``.

    >>> blend_like("Shoegaze", " black metal ")
    'shoegaze | black metal'
    >>> blend_like("pop|rock", "jazz")
    Traceback (most recent call last):
    ValueError: a blend parent cannot contain "|": 'pop|rock'
    """
    parts = []
    for parent in (a, b):
        if "|" in parent:
            raise ValueError(f'a blend parent cannot contain "|": {parent!r}')
        cleaned = clean_like(parent)
        if cleaned is None:
            raise ValueError("a blend needs two non-empty parent genres")
        parts.append(cleaned)
    a, b = parts
    return f"{a}{BLEND_SEPARATOR}{b}"


def build_prompt(like: str | None = None) -> str:
    """The prompt whose completion is one genre.

    >>> build_prompt("dub")
    'like: dub\\ngenre:'
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
