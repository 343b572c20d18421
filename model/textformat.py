"""The text format the model is trained on and sampled with.

One example is one genre, optionally conditioned on a related genre or word::

    genre: midwest shoegaze⏎
    like: shoegaze⏎genre: midwest shoegaze⏎

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
#: Longest accepted ``like`` text (characters, after cleaning).
MAX_LIKE_CHARS = 48


def clean_like(like: str | None) -> str | None:
    """Normalise a ``like`` condition; empty or blank means no condition.

    >>> clean_like("  Post-Rock\\n "), clean_like("   ")
    ('post-rock', None)
    """
    if like is None:
        return None
    text = clean_name(like.replace(END_MARKER, " "))
    if not text:
        return None
    return text[:MAX_LIKE_CHARS].strip()


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
