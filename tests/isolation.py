"""Which environment variables a test may see (the autouse fixture in tests/conftest.py and the
early soak run in tests/early_soak.py apply the same rule)."""

from __future__ import annotations

from collections.abc import Mapping


def private_variable(name: str) -> bool:
    """Whether a test must not see the variable: the developer's settings and token.

    >>> [private_variable(n) for n in ("MICROGENRE_DATA_DIR", "MICROGENRE_TEST_X", "PATH")]
    [True, False, False]
    """
    return (
        name.startswith("MICROGENRE_")
        and not name.startswith("MICROGENRE_TEST_")
        and name != "MICROGENRE_REQUIRE_POSTGRES"
    ) or name == "DISCORD_TOKEN"


def isolated_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` without the variables a test must not see."""
    return {k: v for k, v in environ.items() if not private_variable(k)}
