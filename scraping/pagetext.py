"""Tolerant, dependency-free helpers for reading the flat HTML of everynoise.com pages.

The pages are large (2.5 MB, 5 000+ genre ``<div>`` lines) and regular, so they are split on
tag starts and read with small regular expressions instead of a full DOM: fast, and a page cut
at any byte still yields every complete entry before the cut.

>>> parse_attrs('id=item2 class="genre scanme" style="color: #ca8205; top: 5px"')["class"]
'genre scanme'
>>> parse_style("color: #CA8205; top: 2827px; left: 1081px; font-size: 103%")
{'color': '#ca8205', 'y': 2827, 'x': 1081, 'font_size': 103}
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

_ATTR = re.compile(r"""([^\s"'<>/=]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+)))?""")
_TAG = re.compile(r"<[^>]*>")
_TITLE = re.compile(r"<title>(.*?)</title>", re.I | re.S)
_STYLE_PARTS = {
    "color": re.compile(r"(?:^|;)\s*color\s*:\s*(#[0-9a-fA-F]{3,8})"),
    "y": re.compile(r"(?:^|;)\s*top\s*:\s*(-?\d+(?:\.\d+)?)px"),
    "x": re.compile(r"(?:^|;)\s*left\s*:\s*(-?\d+(?:\.\d+)?)px"),
    "font_size": re.compile(r"(?:^|;)\s*font-size\s*:\s*(\d+(?:\.\d+)?)%"),
}


def parse_attrs(text: str) -> dict[str, str]:
    """Attributes of a start tag (quoted or not), entity-decoded; names lower-cased."""
    attrs: dict[str, str] = {}
    for match in _ATTR.finditer(text):
        name, dq, sq, bare = match.groups()
        value = dq if dq is not None else sq if sq is not None else bare
        attrs.setdefault(name.lower(), html.unescape(value) if value is not None else "")
    return attrs


def _number(text: str) -> int | float:
    value = float(text)
    return int(value) if value.is_integer() else value


def parse_style(style: str) -> dict[str, str | int | float]:
    """Colour, position (``x`` = left, ``y`` = top, pixels) and font size (%) of a style."""
    found: dict[str, str | int | float] = {}
    for key, pattern in _STYLE_PARTS.items():
        match = pattern.search(style)
        if match:
            found[key] = match.group(1).lower() if key == "color" else _number(match.group(1))
    return found


def strip_tags(fragment: str) -> str:
    """Text of an HTML fragment, entities decoded, whitespace collapsed."""
    return " ".join(html.unescape(_TAG.sub(" ", fragment)).split())


def page_title(text: str) -> str | None:
    match = _TITLE.search(text)
    return strip_tags(match.group(1)) if match else None


@dataclass(frozen=True)
class Element:
    """One ``<tag ...>body</tag>`` found by :func:`split_elements`; ``complete`` is False when
    the page ended before the closing tag (or inside the start tag)."""

    attrs: dict[str, str]
    body: str
    complete: bool


def split_elements(text: str, tag: str) -> list[Element]:
    """Every ``tag`` element of ``text`` that does not nest inside another of its kind.

    >>> [(e.attrs, e.body, e.complete) for e in split_elements("<p a=1>x</p><p b=2>y", "p")]
    [({'a': '1'}, 'x', True), ({'b': '2'}, 'y', False)]
    """
    opener = re.compile(rf"<{tag}\b", re.I)
    closer = re.compile(rf"</{tag}\s*>", re.I)
    starts = [m.start() for m in opener.finditer(text)]
    elements = []
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else len(text)
        chunk = text[start + len(tag) + 1 : end]
        head_end = chunk.find(">")
        if head_end < 0:
            elements.append(Element(parse_attrs(chunk), "", False))
            continue
        attrs = parse_attrs(chunk[:head_end])
        rest = chunk[head_end + 1 :]
        close = closer.search(rest)
        if close is None:
            elements.append(Element(attrs, rest, False))
        else:
            elements.append(Element(attrs, rest[: close.start()], True))
    return elements
