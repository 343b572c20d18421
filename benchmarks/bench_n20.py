"""`generate -n 20` after load: today's defaults (temperature 0.85, first request assuming 2/3
survive) against temperature 0.75 with the first request assuming 1/3 survive, seeds 1-10,
calls alternated, one loaded model.

    MICROGENRE_MODEL_THREADS=2 .venv/bin/python benchmarks/bench_n20.py
"""

import asyncio
import statistics
import time
from pathlib import Path

from bot.cli.common import load_fingerprint, load_sampler
from bot.config import load_config
from model.filters import Moderator
from model.pipeline import GenrePipeline
from model.sampler import LocalBackend

ad = Path("model/default_adapter")
sampler = load_sampler(load_config(None), ad)
fp = load_fingerprint(ad)
backend = LocalBackend(sampler)
res = {0.85: [], 0.75: []}
raw = {k: [] for k in res}
rounds = {k: [] for k in res}


async def one(T, s):
    p = GenrePipeline(backend, fp, Moderator(), oversample=1.5 if T == 0.85 else 3.0)
    t = time.perf_counter()
    o = await p.generate(20, seed=s, temperature=T)
    dt = time.perf_counter() - t
    res[T].append(dt)
    raw[T].append(o.stats.get("raw"))
    rounds[T].append(o.stats.get("attempts"))


async def main():
    await one(0.85, 99)  # warm-up
    for k in res:
        res[k].clear()
        raw[k].clear()
        rounds[k].clear()
    for s in range(1, 11):
        for T in (0.85, 0.75):
            await one(T, s)


asyncio.run(main())
for T in res:
    print(
        T,
        f"median {statistics.median(res[T]):.3f} s",
        f"min {min(res[T]):.3f} max {max(res[T]):.3f}",
        "raw",
        raw[T],
        "attempts",
        rounds[T],
    )
