"""Stands in for `microgenre eval --adapter DIR --json`: prints an EvalResult.

Usage: fake_eval.py NEW_WELL_FORMED NEW_NOVEL [DELAY_S] [--adapter DIR] --json
A retrained adapter (a path containing "run-") gets the given rates, anything else 0.9/0.6.
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from model.events import EvalResult


def main() -> int:
    args = sys.argv[1:]
    adapter = args[args.index("--adapter") + 1] if "--adapter" in args else None
    if adapter is not None and "run-" in adapter:
        well_formed, novel = float(args[0]), float(args[1])
    else:
        well_formed, novel = 0.9, 0.6
    if len(args) > 2 and not args[2].startswith("--"):
        time.sleep(float(args[2]))
    print("loading model...", file=sys.stderr)
    table = {"raw": {"n": 100, "well_formed": well_formed, "novel": novel}}
    print(EvalResult(100, adapter or "base", "valid", 900, 100, 0.85, table).to_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
