"""The soak test, shortened for CI: 2 minutes, the scripted sampler (benchmarks/soak.py).

The run itself starts when collection ends and goes on beside the other tests
(tests/early_soak.py); this test comes last, waits for it and checks what it left."""

from __future__ import annotations

import json

import pytest

from tests import early_soak


@pytest.mark.soak
@pytest.mark.timeout(600)
def test_two_minute_soak_passes_every_check() -> None:
    run = early_soak.RUN.result(timeout=540)
    out = run.summary_path
    assert out.is_file(), run.stderr[-3000:]
    summary = json.loads(out.read_text(encoding="utf-8"))
    # null: not judged (the RSS slopes are judged for runs of 10 minutes or more).
    failed = [name for name, ok in summary["checks"].items() if ok is False]
    # The details first: pytest cuts a long message, and the summary is long.
    details = {
        "failed": failed,
        "vote_mismatches": summary["vote_mismatches"][:5],
        "unrecorded_posts": summary["unrecorded_posts"][:5],
        "bot_log_tail": summary.get("bot_log_tail", "")[-1500:],
    }
    assert run.returncode == 0 and not failed, details
    assert summary["genres_delivered"] > 0 and summary["votes_stored"] > 0
    assert len(summary["faults"]["worker_kills"]) == 3
    rss = summary["rss"]
    assert summary["checks"]["rss_levels_off"] is None and not rss["slope_judged"]
    assert rss["every_s"] == 30 and len(rss["samples"]) >= 4
    assert rss["slope_window_s"][0] == 80.0 and "last third" in rss["slope_window"]
    # The scripted sampler loads the fake trainer's adapter: the run succeeds, is served.
    retrain = summary["retrain"]
    assert retrain["status"] == "succeeded", retrain
    assert retrain["worker_loaded_adapter_at_s"] is not None
    assert retrain["genres_from_new_model"] > 0 and retrain["progress_edits"] > 0
