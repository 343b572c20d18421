"""`generate -n 20` after load with today's defaults, one adapter against another: each
adapter loaded once, seeds 1-10, calls alternated between the adapters.

    MICROGENRE_MODEL_THREADS=2 .venv/bin/python benchmarks/bench_n20_adapters.py \
        OLD_ADAPTER NEW_ADAPTER
"""

import asyncio
import statistics
import sys
import time
from pathlib import Path

from bot.cli.common import load_fingerprint, load_sampler
from bot.config import load_config
from model.filters import Moderator
from model.pipeline import GenrePipeline
from model.sampler import LocalBackend

config = load_config(None)
pipelines = {}
for name in sys.argv[1:]:
    folder = Path(name)
    backend = LocalBackend(load_sampler(config, folder))
    pipelines[name] = GenrePipeline(backend, load_fingerprint(folder), Moderator())
times: dict[str, list[float]] = {name: [] for name in pipelines}
raw: dict[str, list[int]] = {name: [] for name in pipelines}


async def main() -> None:
    for pipeline in pipelines.values():  # warm-up
        await pipeline.generate(20, seed=99)
    for seed in range(1, 11):
        for name, pipeline in pipelines.items():
            t = time.perf_counter()
            outcome = await pipeline.generate(20, seed=seed)
            times[name].append(time.perf_counter() - t)
            raw[name].append(outcome.stats.get("raw", 0))


asyncio.run(main())
for name in pipelines:
    print(
        name,
        f"median {statistics.median(times[name]):.3f} s",
        f"min {min(times[name]):.3f} max {max(times[name]):.3f}",
        "candidates",
        raw[name],
    )
