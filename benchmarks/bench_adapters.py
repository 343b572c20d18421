"""Serving several LoRA adapters at once: one mixed batch vs one batch per adapter.

    .venv/bin/python benchmarks/bench_adapters.py [--adapters 4] [--n 16] [--reps 3]

Loads SmolLM2 with the shipped adapter and ``--adapters - 1`` copies of it under other names
(copies cost exactly what different adapters cost), then times the same work, ``--adapters``
requests of ``n`` completions each (one per adapter), four ways on the same weights:

* ``mixed``: one batch, PEFT's per-row ``adapter_names`` (``Sampler.mix_adapters = True``);
* ``grouped``: one batch per adapter, each on PEFT's plain active-adapter path;
* ``one-adapter``: every request on the default adapter (unmerged): the cost of the work alone;
* ``merged``: the same on a sampler whose only adapter is the default, which it keeps merged
  into the base weights (what a worker does until a second adapter becomes resident).

Prints one JSON object: seconds per repetition (median, min, max) and completions per second.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapters", type=int, default=4)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--data-dir", default=str(ROOT / "data"))
    args = parser.parse_args()

    from model.artifacts import default_adapter
    from model.base import ModelSpec
    from model.protocol import AdapterRef, GenerationRequest
    from model.sampler import Sampler
    from model.textformat import build_prompt

    found = default_adapter()
    assert found is not None, "no shipped adapter"
    shipped = Path(found)
    tmp = Path(tempfile.mkdtemp(prefix="bench-adapters-"))
    refs = [None] + [
        AdapterRef(f"copy-{i}", str(shutil.copytree(shipped, tmp / f"copy-{i}")))
        for i in range(1, args.adapters)
    ]
    sampler = Sampler.load(ModelSpec(), shipped, data_dir=args.data_dir)
    for ref in refs[1:]:
        assert ref is not None
        sampler.load_adapter(ref.name, ref.path)

    def work(adapters: list[AdapterRef | None]) -> list[GenerationRequest]:
        return [
            GenerationRequest(
                build_prompt(),
                n=args.n,
                temperature=0.9,
                max_tokens=args.max_tokens,
                seed=i,
                adapter=ref,
            )
            for i, ref in enumerate(adapters)
        ]

    def timed(run: Sampler, requests: list[GenerationRequest]) -> list[float]:
        run.complete_batch(requests)  # warm-up
        times = []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            run.complete_batch(requests)
            times.append(time.perf_counter() - t0)
        return times

    results: dict[str, list[float]] = {}
    sampler.mix_adapters = True
    results["mixed"] = timed(sampler, work(refs))
    sampler.mix_adapters = False
    results["grouped"] = timed(sampler, work(refs))
    results["one-adapter"] = timed(sampler, work([None] * len(refs)))
    # A worker whose only resident adapter is the default keeps it merged (Sampler.merged).
    del sampler
    merged = Sampler.load(ModelSpec(), shipped, data_dir=args.data_dir)
    assert merged.merged
    results["merged"] = timed(merged, work([None] * len(refs)))
    completions = args.n * len(refs)
    report = {
        "adapters": len(refs),
        "completions_per_rep": completions,
        "max_tokens": args.max_tokens,
        "reps": args.reps,
        **{
            mode: {
                "median_s": round(statistics.median(t), 3),
                "min_s": round(min(t), 3),
                "max_s": round(max(t), 3),
                "completions_per_s": round(completions / statistics.median(t), 1),
            }
            for mode, t in results.items()
        },
    }
    print(json.dumps(report, indent=2))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
