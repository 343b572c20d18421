"""The soak test, shortened for CI: 2 minutes, the scripted sampler (benchmarks/soak.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SOAK = Path(__file__).resolve().parents[2] / "benchmarks" / "soak.py"


@pytest.mark.soak
@pytest.mark.timeout(600)
def test_two_minute_soak_passes_every_check(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    run = subprocess.run(
        [sys.executable, str(SOAK), "--minutes", "2", "--sampler", "scripted", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert out.is_file(), run.stderr[-3000:]
    summary = json.loads(out.read_text(encoding="utf-8"))
    failed = [name for name, ok in summary["checks"].items() if not ok]
    assert run.returncode == 0 and not failed, (failed, summary)
    assert summary["genres_delivered"] > 0 and summary["votes_stored"] > 0
    assert len(summary["faults"]["worker_kills"]) == 3
