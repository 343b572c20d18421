"""Retraining from Discord: each server teaches its own adapter, one run per machine at a time.

``/retrain start`` queues a run of the server, refused with the reason and the time it becomes
possible while the server has a run queued or running, is within ``[bot] retrain_cooldown_h``
of its last run, or has fewer than ``[bot] retrain_min_votes`` votes since then. The process
holding the machine's training slot takes the oldest queued run; queued runs hear their place
in line. The package, in the order a run meets it:

- :mod:`bot.retrain.manager`: :class:`RetrainManager`, what the cogs and the bot call;
- :mod:`bot.retrain.queue`: the lease on the machine's training slot;
- :mod:`bot.retrain.run`: one run walked as its steps, and what it deletes when it fails;
- :mod:`bot.retrain.steps`: train → evaluate → gate → activate, typed in and out;
- :mod:`bot.retrain.progress`: progress, outcome, and the one writer of a run's row;
- :mod:`bot.retrain.data`: the votes file a server run learns from.

A stop (cancel, SIGTERM) before the activation commits leaves the server on its model; after
it, the run has succeeded. A run interrupted by a crash is marked failed at the next start-up
or when its lease expires (:meth:`RetrainManager.recover`).
"""

from __future__ import annotations

from bot.retrain.manager import NoRunError, RetrainManager
from bot.retrain.progress import Progress, RunOutcome
from bot.retrain.run import version_name
from bot.retrain.steps import gate_metrics, quality_gate
from bot.store.runs import RetrainRefusedError

__all__ = [
    "NoRunError",
    "Progress",
    "RetrainManager",
    "RetrainRefusedError",
    "RunOutcome",
    "gate_metrics",
    "quality_gate",
    "version_name",
]
