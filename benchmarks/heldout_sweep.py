"""The held-out part of `microgenre eval` alone, for quick sweeps (docs/benchmarks.md).

    MICROGENRE_MODEL_THREADS=1 .venv/bin/python benchmarks/heldout_sweep.py \
        model/default_adapter 0.75 1,2,3 0,1,2 1000      # ADAPTER TEMPERATURE SEEDS LEVELS N

Prints one JSON line: per level the mean re-invention, its ratio to raw-novel markovify
(mean, min-max), invented-word rate, minimum uniqueness, maximum lead ratio, candidates sampled.
"""

import asyncio
import json
import sys
import time
from pathlib import Path

from bot.cli.common import load_fingerprint, load_sampler
from bot.config import load_config
from model.dataset import build_dataset, records_from_genres_csv
from model.evaluate import HeldOut, fair_evaluation
from model.filters import LeadingPrior, Moderator
from model.pipeline import GenrePipeline
from model.sampler import LocalBackend

adapter, temp, seeds, levels, n = (
    Path(sys.argv[1]),
    float(sys.argv[2]),
    [int(s) for s in sys.argv[3].split(",")],
    [int(level) or None for level in sys.argv[4].split(",")],
    int(sys.argv[5]),
)
config = load_config(None)
ds = build_dataset(records_from_genres_csv("../shared/data/genres.csv"), seed=0)
held = HeldOut.build(ds.known, ds.train, ds.valid)
fp = load_fingerprint(adapter)
prior = fp.leading or LeadingPrior.from_names(e.genre for e in ds.train)
sampler = load_sampler(config, adapter)
# Avoid ending on the split's training genres only (see bot/cli/evaluate.py).
sampler.avoid(sampler.adapter_of_default(), held.fingerprint)
backend = LocalBackend(sampler)
sizes = {"max_attempts": 30, "max_request": max(512, 4 * n), "max_candidates": 30 * n}


def mk(over: LocalBackend) -> GenrePipeline:
    return GenrePipeline(over, held.fingerprint, Moderator(), leading_prior=prior, **sizes)


t = time.time()
rep = asyncio.run(
    fair_evaluation(
        backend,
        mk,
        held,
        [e.genre for e in ds.train],
        n=n,
        seeds=seeds,
        levels=levels,
        temperature=temp,
    )
)
s = rep["summary"]
print(
    json.dumps(
        {
            "adapter": str(adapter),
            "temp": temp,
            "n": n,
            "seeds": seeds,
            "wall": round(time.time() - t),
            "base": s["baseline"]["reinvented"],
            **{
                k: {
                    "re": v["reinvented"]["mean"],
                    "ratio": v["ratio"],
                    "inv": v["invented_word_rate"]["mean"],
                    "uniq": v["unique"]["min"],
                    "lead": v["lead_ratio"]["max"],
                    "raw": [p["raw"] for p in rep["model"] if str(p["weirdness"]) == k],
                }
                for k, v in s["levels"].items()
            },
        }
    )
)
