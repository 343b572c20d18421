"""The size limits of scripts/check_sizes.py hold for the tree, and the script catches breaches."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("check_sizes", ROOT / "scripts" / "check_sizes.py")
assert _spec is not None and _spec.loader is not None
check_sizes = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_sizes)


def test_the_tree_is_within_the_limits() -> None:
    assert check_sizes.offenders(ROOT, 250, 800) == []


def test_a_long_class_and_a_long_module_are_reported(tmp_path: Path) -> None:
    (tmp_path / "bot").mkdir()
    (tmp_path / "model").mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(12))
    (tmp_path / "bot" / "big.py").write_text(f"@decorator\nclass Big:\n{body}\n")
    (tmp_path / "model" / "long.py").write_text("x = 1\n" * 21)
    (tmp_path / "model" / "fine.py").write_text("class Small:\n    pass\n")
    found = check_sizes.offenders(tmp_path, max_class=10, max_module=20)
    assert found == [
        "bot/big.py: class Big of 14 lines (limit 10)",
        "model/long.py: module of 21 lines (limit 20)",
    ]
