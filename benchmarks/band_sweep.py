"""Weirdness band layouts compared on the same candidates (docs/benchmarks.md, run 11).

    MICROGENRE_MODEL_THREADS=1 .venv/bin/python benchmarks/band_sweep.py \
        model/default_adapter 0.75 1,2,3 1000      # ADAPTER TEMPERATURE SEEDS N

Per seed one stream of scored completions is sampled and replayed to every layout, so the
layouts differ by their selection only. Layouts: ``ends`` (level w aims at the rank quantile
(w - 1) / 4 with a band of 1 / 3: levels 1-2 and 4-5 share three quarters of their band),
``even`` (today's :func:`model.pipeline.band_order`: bands spread evenly from the top to the
bottom, neighbours share half), ``fifths`` (the same with five disjoint bands, five times the
need sampled). (Run 11 measured ``even`` as its first version, which dealt each band from its
centre; today's deals level 1 from the top and 5 from the bottom.) Prints one JSON line per layout.
"""

import asyncio
import json
import sys
import time
from pathlib import Path

import model.pipeline as pipeline_module
from bot.cli.common import load_fingerprint, load_sampler
from bot.config import load_config
from model.dataset import build_dataset, records_from_genres_csv
from model.evaluate import HeldOut, ReplayBackend, fair_evaluation
from model.filters import LeadingPrior, Moderator
from model.pipeline import GenrePipeline
from model.sampler import LocalBackend

adapter, temp, seeds, n = (
    Path(sys.argv[1]),
    float(sys.argv[2]),
    [int(s) for s in sys.argv[3].split(",")],
    int(sys.argv[4]),
)
even_order = pipeline_module.band_order  # today's layout (bands 1 / rerank wide)


def ends_order(scores: list[float], weirdness: int, share: float = 1 / 3) -> list[int]:
    """The earlier layout: nearest ranks first to the quantile (w - 1) / 4."""
    ranked = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    target = (weirdness - 1) / 4 * (len(ranked) - 1)
    order = sorted(range(len(ranked)), key=lambda r: (abs(r - target), r))
    return [ranked[r] for r in order]


RERANK = {"ends": 3.0, "even": 3.0, "fifths": 5.0}
ORDER = {"ends": ends_order, "even": even_order, "fifths": even_order}
LAYOUT = "ends"

config = load_config(None)
ds = build_dataset(records_from_genres_csv("../shared/data/genres.csv"), seed=0)
held = HeldOut.build(ds.known, ds.train, ds.valid)
fp = load_fingerprint(adapter)
prior = fp.leading or LeadingPrior.from_names(e.genre for e in ds.train)
sampler = load_sampler(config, adapter)
# Avoid ending on the split's training genres only (see bot/cli/evaluate.py).
sampler.avoid(sampler.adapter_of_default(), held.fingerprint)
backend = LocalBackend(sampler)
sizes = {"max_attempts": 30, "max_request": max(512, 4 * n), "max_candidates": 50 * n}


def mk(over: ReplayBackend) -> GenrePipeline:
    return GenrePipeline(
        over, held.fingerprint, Moderator(), leading_prior=prior, rerank=RERANK[LAYOUT], **sizes
    )


async def main() -> None:
    streams = {seed: ReplayBackend(backend) for seed in seeds}
    for layout in ("fifths", "ends", "even"):  # the most demanding first: later ones replay
        global LAYOUT
        LAYOUT = layout
        pipeline_module.band_order = ORDER[layout]
        t = time.time()
        rows = []
        for seed in seeds:
            streams[seed].rewind()
            rep = await fair_evaluation(
                streams[seed], mk, held, [e.genre for e in ds.train],
                n=n, seeds=[seed], levels=[1, 2, 3, 4, 5], temperature=temp,
            )  # fmt: skip
            rows.append(rep)
        base = [r["baseline_raw_novel"][0]["reinvented"] for r in rows]
        out: dict[str, object] = {"layout": layout, "n": n, "seeds": seeds, "base": base}
        for level in range(1, 6):
            pts = [p for r in rows for p in r["model"] if p["weirdness"] == level]
            out[str(level)] = {
                "re": [p["reinvented"] for p in pts],
                "ratio": round(sum(p["reinvented"] for p in pts) / max(sum(base), 1), 2),
                "inv": round(sum(p["invented_word_rate"] for p in pts) / len(pts), 3),
                "n": [p["n"] for p in pts],
                "uniq": min(p["unique"] for p in pts),
                "lead": max(p["lead_ratio"] for p in pts),
            }
        out["wall_s"] = round(time.time() - t)
        print(json.dumps(out), flush=True)


asyncio.run(main())
