"""A server run's replay when the deployment has no real genres: the starting adapter's own.

A server run replays real genres so that the adapter keeps writing genre names while it learns
a server's votes, and the bot evaluates both adapters on a validation split. Both come from a
dataset built from the store's real genres. A fresh deployment (`microgenre db upgrade`, no
scrape) has none, and real genre lists never ship with the project: then the run samples
``n`` genres from the adapter it starts from, through the same pipeline as `/genre new` (novel,
well-formed, moderated against that adapter's fingerprint), and builds its dataset from them
(:func:`write_self_replay_dataset`). Replaying the model's own outputs anchors it where it was,
as the replay of real genres does, without real data. The dataset keeps the starting adapter's
fingerprint and leading-word prior, so the new adapter still knows the real genres its start
knew, and ``provenance.json`` says where the genres came from.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from model.artifacts import FINGERPRINT, LEADING_WORDS
from model.dataset import FINGERPRINT_FILE, LEADING_FILE, build_dataset, write_dataset
from model.errors import GenerationError
from model.filters import Fingerprint
from model.protocol import CompletionBackend

SELF_REPLAY_SOURCE = "self-replay"
PROVENANCE_FILE = "provenance.json"
# Genres sampled for a self-replay dataset (about 20 s on 2 cores with SmolLM2).
SELF_REPLAY_GENRES = 600


async def sample_own_genres(
    backend: CompletionBackend, fingerprint: Fingerprint, n: int, *, seed: int
) -> list[str]:
    """Up to ``n`` distinct novel genres from ``backend``, as `/genre new` would deliver them
    (what a call that gave up early had delivered, when it gave up)."""
    from model.pipeline import GenrePipeline

    pipeline = GenrePipeline(backend, fingerprint, None)
    try:
        outcome = await pipeline.generate(n, seed=seed)
    except GenerationError as exc:
        if exc.partial is None:
            raise
        outcome = exc.partial
    return list(outcome.genres)


def write_self_replay_dataset(
    names: Sequence[str], folder: Path, adapter: Path, *, seed: int
) -> dict[str, Any]:
    """A dataset of ``names`` in ``folder`` that carries ``adapter``'s fingerprint and prior;
    its provenance."""
    if not names:
        raise GenerationError(
            "The starting adapter wrote no usable genre to replay; import real genres "
            "(`microgenre scrape`) or pass --dataset."
        )
    origin = {"source": SELF_REPLAY_SOURCE, "extra": {}}
    records = [{"key": n, "display_name": n, "sources": [origin]} for n in names]
    dataset = build_dataset(records, seed=seed, valid_fraction=0.1)
    write_dataset(dataset, folder)
    for source, target in ((FINGERPRINT, FINGERPRINT_FILE), (LEADING_WORDS, LEADING_FILE)):
        if (adapter / source).is_file():
            shutil.copyfile(adapter / source, folder / target)
    provenance = {
        "source": SELF_REPLAY_SOURCE,
        "adapter": str(adapter),
        "genres": len(names),
        "seed": seed,
    }
    (folder / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
    return provenance


def replay_source(dataset: Path) -> str:
    """Where a dataset's genres came from: ``self-replay`` or ``genres``."""
    try:
        return str(json.loads((dataset / PROVENANCE_FILE).read_text())["source"])
    except (OSError, ValueError, KeyError):
        return "genres"
