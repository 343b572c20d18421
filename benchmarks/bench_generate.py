"""Generation benchmark: cold/warm CLI time, batched throughput vs a one-genre-per-call loop.

    .venv/bin/python benchmarks/bench_generate.py [--n 200] [--loop-calls 8] [--skip-cli]
    .venv/bin/python benchmarks/bench_generate.py --compare [--n 200] [--runs 3] [--levels 2,0]

``--compare`` loads the adapter twice, without the fast path (old: no int8, full head, samples
may end on known genres, each row runs its own prompt unless ``--old-share-prefill``) and with
the configured levers (new, or those ``--quantize``, ``--restrict-head``, ``--avoid-known`` and
``--share-prefill`` pick), and
times ``generate -n N`` after load for each weirdness level (0: unranked), old and new
alternated (A/B/A/B) with seeds 1..runs.
``--old-adapter`` gives old its own adapter: with ``--no-quantize --no-restrict-head
--no-avoid-known`` only the adapter differs. It prints novel genres/s (median, min–max), raw
candidates per delivered genre, what each rejection class costs per delivered genre, and
re-checks that every delivered genre is well-formed, novel and unique.

1. ``microgenre generate -n 20`` in a fresh data folder (first run: includes the GGUF
   conversion), then again (warm); checks the 20 genres are distinct, well-formed and absent from
   ``../shared/data/genres.csv``.
2. Throughput of the pipeline (``generate -n N`` after load): novel genres per second.
3. The earlier project's way on the same merged weights: one call per genre decoding up to
   ``max_length=200`` tokens (no stop at the end marker), parse the first line, keep it if novel;
   novel genres per second and the speed-up.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))


def real_keys() -> set[str]:
    from scraping.normalize import genre_key

    path = SHARED / "genres.csv"
    if not path.is_file():
        return set()
    with path.open(encoding="utf-8", newline="") as fh:
        return {genre_key(row["genre"]) for row in csv.DictReader(fh)}


def cli_runs(data_dir: Path, adapter: str | None) -> list[dict[str, object]]:
    from model.filters import validate
    from scraping.normalize import genre_key

    keys = real_keys()
    env = {**os.environ, "MICROGENRE_PATHS_DATA_DIR": str(data_dir)}
    cmd = [str(ROOT / ".venv" / "bin" / "microgenre"), "generate", "-n", "20"]
    if adapter:
        cmd += ["--adapter", adapter]
    runs: list[dict[str, object]] = []
    for label in ("cold (with conversion)", "warm"):
        start = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=data_dir.parent)
        seconds = time.perf_counter() - start
        genres = proc.stdout.split("\n")[:-1]
        runs.append(
            {
                "run": label,
                "seconds": round(seconds, 1),
                "exit": proc.returncode,
                "count": len(genres),
                "distinct": len({genre_key(g) for g in genres}),
                "well_formed": sum(validate(g) is None for g in genres),
                "in_genres_csv": sum(genre_key(g) in keys for g in genres),
                "sample": genres[:5],
                "stderr": proc.stderr.strip().splitlines()[-2:],
            }
        )
    return runs


def throughput(n: int, loop_calls: int, adapter: str | None, data_dir: Path) -> dict[str, object]:
    import torch

    from model.artifacts import DEFAULT_ADAPTER_DIR
    from model.base import ModelSpec
    from model.filters import Fingerprint, Moderator, validate
    from model.pipeline import GenrePipeline
    from model.sampler import LocalBackend, Sampler
    from model.textformat import build_prompt, parse_completion

    path = Path(adapter) if adapter else DEFAULT_ADAPTER_DIR
    t0 = time.perf_counter()
    sampler = Sampler.load(ModelSpec(), path, data_dir=data_dir)
    load_s = time.perf_counter() - t0
    fingerprint = Fingerprint.load(path / "known_genres.fingerprint")
    pipeline = GenrePipeline(LocalBackend(sampler), fingerprint, Moderator())
    asyncio.run(pipeline.generate(10, seed=1))  # warm-up (first batch, classifier load)
    t0 = time.perf_counter()
    outcome = asyncio.run(pipeline.generate(n, seed=2))
    batched_s = time.perf_counter() - t0
    batched_rate = len(outcome.genres) / batched_s

    # One genre per call, max_length=200, as the earlier project did: the same weights and the
    # same decoding kernel (so only the method differs), no stop at the end marker.
    tok = sampler.tokenizer
    enc = tok(build_prompt(), return_tensors="pt", add_special_tokens=False)
    width = int(enc["input_ids"].shape[1])
    novel: set[str] = set()
    t0 = time.perf_counter()
    for i in range(loop_calls):
        torch.manual_seed(100 + i)
        tokens = sampler.decode(
            enc["input_ids"],
            enc["attention_mask"],
            max_new_tokens=200 - width,
            temperature=pipeline.temperature,
            top_p=pipeline.top_p,
            stop_ids=[int(tok.eos_token_id)],
        )[0]
        name = parse_completion(tok.decode(tokens, skip_special_tokens=True))
        if name and validate(name) is None and fingerprint.match(name) is None:
            novel.add(name)
    loop_s = time.perf_counter() - t0
    loop_rate = len(novel) / loop_s if novel else 1 / loop_s  # at most one genre per call
    return {
        "model": sampler.name,
        "load_s": round(load_s, 2),
        "n": n,
        "batched_s": round(batched_s, 2),
        "batched_novel_per_s": round(batched_rate, 2),
        "pipeline_stats": outcome.stats,
        "loop_calls": loop_calls,
        "loop_s": round(loop_s, 2),
        "loop_novel": len(novel),
        "loop_novel_per_s": round(loop_rate, 3),
        "speedup": round(batched_rate / loop_rate, 1),
        "threads": torch.get_num_threads(),
    }


def compare(args: argparse.Namespace, data_dir: Path) -> dict[str, object]:
    """Old (no fast path) against new, alternated in one process: see the module docstring."""
    import statistics

    import torch

    from model.artifacts import DEFAULT_ADAPTER_DIR, load_fingerprint
    from model.base import ModelSpec
    from model.fastpath import FastSettings
    from model.filters import Moderator, near_key, validate
    from model.pipeline import GenrePipeline
    from model.sampler import LocalBackend, Sampler

    path = Path(args.adapter) if args.adapter else DEFAULT_ADAPTER_DIR
    paths = {"old": Path(args.old_adapter) if args.old_adapter else path, "new": path}
    spec = ModelSpec(threads=args.threads)
    variants = {
        "old": FastSettings(quantize=False, restrict_head=False),
        "new": FastSettings(quantize=args.quantize, restrict_head=args.restrict_head),
    }
    # Old: the pipeline of before (samples may end on known genres); new: as configured.
    avoid = {"old": False, "new": args.avoid_known}
    fingerprints = {name: load_fingerprint(p) for name, p in paths.items()}
    moderator = Moderator()
    pipelines = {}
    for name, fast in variants.items():
        sampler = Sampler.load(spec, paths[name], data_dir=data_dir, fast=fast)
        # Old runs each row's prompt through the model (unless --old-share-prefill); new shares
        # it when --share-prefill.
        sampler.share_prefill = args.share_prefill if name == "new" else args.old_share_prefill
        pipelines[name] = GenrePipeline(
            LocalBackend(sampler), fingerprints[name], moderator, avoid_known=avoid[name]
        )
        asyncio.run(pipelines[name].generate(10, seed=999))  # warm-up
    levels = [int(x) for x in args.levels.split(",")]
    runs: dict[str, list[dict[str, object]]] = {}
    for seed in range(1, args.runs + 1):
        for level in levels:
            for name, pipeline in pipelines.items():
                t0 = time.perf_counter()
                outcome = asyncio.run(pipeline.generate(args.n, seed=seed, weirdness=level or None))
                seconds = time.perf_counter() - t0
                genres = outcome.genres
                delivered = max(len(genres), 1)
                stats = outcome.stats
                key = f"{name} weirdness {level or 'unranked'}"
                runs.setdefault(key, []).append(
                    {
                        "seed": seed,
                        "per_s": round(len(genres) / seconds, 2),
                        "raw_per_delivered": round(stats.get("raw", 0) / delivered, 2),
                        "rejected_per_delivered": {
                            k.removeprefix("rejected:"): round(v / delivered, 2)
                            for k, v in sorted(stats.items())
                            if k.startswith("rejected:") or k == "surplus"
                        },
                        "well_formed": sum(validate(g) is None for g in genres) / delivered,
                        "novel": sum(fingerprints[name].match(g) is None for g in genres)
                        / delivered,
                        "unique": len({near_key(g) for g in genres}) / delivered,
                    }
                )
                print(key, seed, runs[key][-1]["per_s"], file=sys.stderr, flush=True)
    summary = {
        key: {
            "per_s_median": statistics.median(r["per_s"] for r in rows),  # type: ignore[misc]
            "per_s_min_max": [min(r["per_s"] for r in rows), max(r["per_s"] for r in rows)],  # type: ignore[type-var]
            "runs": rows,
        }
        for key, rows in runs.items()
    }
    adapters = {name: str(p) for name, p in paths.items()}
    return {"adapters": adapters, "n": args.n, "threads": torch.get_num_threads(), **summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--loop-calls", type=int, default=8)
    parser.add_argument("--adapter", default=None)
    parser.add_argument("--old-adapter", default=None, help="--compare: old's adapter")
    parser.add_argument("--skip-cli", action="store_true")
    parser.add_argument("--compare", action="store_true", help="old vs new, alternated")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--levels", default="2,0", help="weirdness levels; 0 = unranked")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--data-dir", default=None, help="holds the converted base model")
    parser.add_argument("--quantize", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--restrict-head", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--share-prefill",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="new runs each distinct prompt once per batch (old once per row)",
    )
    parser.add_argument(
        "--old-share-prefill",
        action="store_true",
        help="old shares each prompt's prefill too (to time another lever alone)",
    )
    parser.add_argument(
        "--avoid-known",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="new never ends a sample on a known genre (old always may)",
    )
    args = parser.parse_args()
    if args.compare:
        data = Path(args.data_dir) if args.data_dir else ROOT / "data"
        print(json.dumps(compare(args, data), indent=2, ensure_ascii=False))
        return
    with tempfile.TemporaryDirectory(prefix="bench-gen-") as tmp:
        data_dir = Path(tmp) / "data"
        report: dict[str, object] = {}
        if not args.skip_cli:
            report["cli"] = cli_runs(data_dir, args.adapter)
        report["throughput"] = throughput(args.n, args.loop_calls, args.adapter, data_dir)
    print(json.dumps(report, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
