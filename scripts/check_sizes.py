"""Size limits that keep the house walkable: no class in bot/ over 250 lines, no module in bot/
or model/ over 800 lines. Exits 1 and names each offender.

    python scripts/check_sizes.py [--max-class 250] [--max-module 800]

Lines are physical lines: a class from its first decorator to its last line, a module all of
its lines. tests/test_sizes.py runs it in the suite.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLASS_PACKAGES = ("bot",)
MODULE_PACKAGES = ("bot", "model")


def class_sizes(path: Path) -> Iterator[tuple[str, int]]:
    """``(qualified name, lines)`` of every class in ``path``, nested ones included."""
    tree = ast.parse(path.read_text(encoding="utf-8"))

    def visit(node: ast.AST, prefix: str) -> Iterator[tuple[str, int]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                first = min([d.lineno for d in child.decorator_list] + [child.lineno])
                assert child.end_lineno is not None
                name = f"{prefix}{child.name}"
                yield name, child.end_lineno - first + 1
                yield from visit(child, f"{name}.")
            else:
                yield from visit(child, prefix)

    yield from visit(tree, "")


def offenders(root: Path, max_class: int, max_module: int) -> list[str]:
    found = []
    for package in sorted(set(CLASS_PACKAGES) | set(MODULE_PACKAGES)):
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root)
            if package in MODULE_PACKAGES:
                lines = len(path.read_text(encoding="utf-8").splitlines())
                if lines > max_module:
                    found.append(f"{rel}: module of {lines} lines (limit {max_module})")
            if package in CLASS_PACKAGES:
                for name, lines in class_sizes(path):
                    if lines > max_class:
                        found.append(f"{rel}: class {name} of {lines} lines (limit {max_class})")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT)
    parser.add_argument("--max-class", type=int, default=250)
    parser.add_argument("--max-module", type=int, default=800)
    args = parser.parse_args(argv)
    found = offenders(args.root, args.max_class, args.max_module)
    for line in found:
        print(line)
    if not found:
        print("sizes: every class and module is within its limit")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
