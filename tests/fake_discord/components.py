"""Message components as Discord validates them: action rows of buttons.

Discord's limits (documented): at most 5 action rows per message, at most 5 buttons per row, a
``custom_id`` of at most 100 characters (required on every button but link buttons, unique in
the message), a label of at most 80 characters. A body that breaks one is answered 400 Invalid
Form Body (code 50035) with the path of each error, nested as Discord nests it
(:func:`nested_errors`).
"""

from __future__ import annotations

from typing import Any

MAX_ROWS = 5
MAX_BUTTONS_PER_ROW = 5
MAX_CUSTOM_ID = 100
MAX_LABEL = 80
ACTION_ROW = 1
BUTTON = 2
LINK_STYLE = 5


def component_errors(components: Any) -> dict[str, str]:
    """Dotted path -> problem, for every rule ``components`` breaks (empty: valid).

    >>> component_errors([{"type": 1, "components": [{"type": 2, "style": 1, "label": "x"}]}])
    {'components.0.components.0.custom_id': 'A custom id is required.'}
    """
    if not isinstance(components, list):
        return {"components": "Must be an array."}
    errors: dict[str, str] = {}
    if len(components) > MAX_ROWS:
        errors["components"] = f"Must be {MAX_ROWS} or fewer in length."
    seen: set[str] = set()
    for r, row in enumerate(components):
        where = f"components.{r}"
        if not isinstance(row, dict) or row.get("type") != ACTION_ROW:
            errors[where] = "Top-level components must be action rows."
            continue
        buttons = row.get("components") or []
        if not buttons:
            errors[f"{where}.components"] = "Must be 1 or more in length."
        if len(buttons) > MAX_BUTTONS_PER_ROW:
            errors[f"{where}.components"] = f"Must be {MAX_BUTTONS_PER_ROW} or fewer in length."
        for b, item in enumerate(buttons):
            errors.update(_button_errors(item, f"{where}.components.{b}", seen))
    return errors


def _button_errors(item: Any, where: str, seen: set[str]) -> dict[str, str]:
    if not isinstance(item, dict) or item.get("type") != BUTTON:
        return {where: "Only buttons are supported here."}
    errors = {}
    label = item.get("label")
    if label is not None and len(str(label)) > MAX_LABEL:
        errors[f"{where}.label"] = f"Must be {MAX_LABEL} or fewer in length."
    if item.get("style") == LINK_STYLE:
        if not item.get("url"):
            errors[f"{where}.url"] = "A link button needs a url."
        return errors
    custom_id = item.get("custom_id")
    if not custom_id:
        errors[f"{where}.custom_id"] = "A custom id is required."
    elif len(str(custom_id)) > MAX_CUSTOM_ID:
        errors[f"{where}.custom_id"] = f"Must be {MAX_CUSTOM_ID} or fewer in length."
    elif custom_id in seen:
        errors[f"{where}.custom_id"] = "Component custom id cannot be duplicated."
    else:
        seen.add(str(custom_id))
    return errors


def custom_ids(components: list[dict[str, Any]] | None) -> list[str]:
    """The ``custom_id`` of every button of ``components``, in order.

    >>> custom_ids([{"type": 1, "components": [{"type": 2, "custom_id": "a"}]}])
    ['a']
    """
    return [
        str(item["custom_id"])
        for row in components or []
        for item in row.get("components") or []
        if item.get("custom_id")
    ]


def nested_errors(flat: dict[str, str], code: str = "BASE_TYPE_INVALID") -> dict[str, Any]:
    """Discord's nested ``errors`` object from dotted paths.

    >>> nested_errors({"a.0.b": "bad"})
    {'a': {'0': {'b': {'_errors': [{'code': 'BASE_TYPE_INVALID', 'message': 'bad'}]}}}}
    """
    out: dict[str, Any] = {}
    for path, message in flat.items():
        node = out
        for key in path.split("."):
            node = node.setdefault(key, {})
        node.setdefault("_errors", []).append({"code": code, "message": message})
    return out


def flat_errors(nested: dict[str, Any], prefix: str = "") -> set[str]:
    """The dotted paths of a nested ``errors`` object (the inverse of :func:`nested_errors`).

    >>> sorted(flat_errors(nested_errors({"a.0.b": "x", "c": "y"})))
    ['a.0.b', 'c']
    """
    paths = set()
    for key, value in nested.items():
        if key == "_errors":
            paths.add(prefix)
        elif isinstance(value, dict):
            paths |= flat_errors(value, f"{prefix}.{key}" if prefix else key)
    return paths
