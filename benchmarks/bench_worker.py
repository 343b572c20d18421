"""Throughput and latency of the generation worker, and the original project's loop for contrast.

    .venv/bin/python benchmarks/bench_worker.py [--config config.toml] [--levels 1,8,32,128]

For each concurrency level L, L simulated users each ask for one novel genre at a time through
:class:`model.pipeline.GenrePipeline` on top of the local worker (``WorkerClient``: one model
process, dynamic batching). Level 1 sends 32 requests one after another, level 8 four per user,
levels 32 and 128 one per user, so "32 sequential" and "32 concurrent" compare like with like.
A raw test then sends 32 plain requests (``n`` completions each, no pipeline) one after another
and all at once: the batching speed-up of the worker alone. The baseline is the original
project's loop on the same weights: one ``generate`` call per genre with ``max_length=200``,
keeping the first line, counting it when it is novel.

Prints a table; ``--json PATH`` also writes the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bot.config import load_config  # noqa: E402
from model.errors import GenerationError  # noqa: E402
from model.filters import Fingerprint  # noqa: E402
from model.pipeline import GenrePipeline  # noqa: E402
from model.worker.client import WorkerClient  # noqa: E402
from model.worker.factory import make_local_client  # noqa: E402

SHARED_GENRES = REPO.parent / "shared" / "data" / "genres.csv"


def load_fingerprint(adapter: str | None) -> tuple[Fingerprint, str]:
    """The adapter's known-genre fingerprint, else one built from the shared genre list."""
    if adapter:
        path = Path(adapter) / "known_genres.fingerprint"
        if path.is_file():
            return Fingerprint.load(path), f"{path.name} of the adapter"
    if SHARED_GENRES.is_file():
        with SHARED_GENRES.open(newline="", encoding="utf-8") as fh:
            names = [row["genre"] for row in csv.DictReader(fh) if row.get("genre")]
        return Fingerprint.from_names(names), f"{len(names)} genres of {SHARED_GENRES.name}"
    return Fingerprint(), "none (novelty not checked)"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def run_level(
    pipeline: GenrePipeline, client: WorkerClient, users: int, per_user: int
) -> dict[str, Any]:
    latencies: list[float] = []
    genres: list[str] = []
    failures = 0
    before = client.health()

    async def user() -> None:
        nonlocal failures
        for _ in range(per_user):
            started = time.perf_counter()
            try:
                outcome = await pipeline.generate(1)
            except GenerationError:
                failures += 1
                continue
            latencies.append(time.perf_counter() - started)
            genres.extend(outcome.genres)

    started = time.perf_counter()
    await asyncio.gather(*(user() for _ in range(users)))
    wall = time.perf_counter() - started
    after = client.health()
    batches = after["batches_served"] - before["batches_served"]
    completions = after["completions_served"] - before["completions_served"]
    return {
        "users": users,
        "requests": users * per_user,
        "genres": len(genres),
        "distinct": len(set(genres)),
        "failures": failures,
        "wall_s": wall,
        "genres_per_s": len(genres) / wall,
        "p50_s": percentile(latencies, 0.5),
        "p95_s": percentile(latencies, 0.95),
        "batches": batches,
        "completions": completions,
        "rows_per_batch": completions / batches if batches else 0.0,
    }


async def raw_speedup(client: WorkerClient, n: int, count: int = 32) -> dict[str, Any]:
    """``count`` raw requests of ``n`` completions, one after another, then all at once."""
    from model.protocol import GenerationRequest
    from model.textformat import END_MARKER, build_prompt

    def request() -> GenerationRequest:
        return GenerationRequest(build_prompt(), n=n, max_tokens=16, stop=(END_MARKER,))

    started = time.perf_counter()
    for _ in range(count):
        await client.complete(request())
    sequential = time.perf_counter() - started
    before = client.health()["batches_served"]
    started = time.perf_counter()
    await asyncio.gather(*(client.complete(request()) for _ in range(count)))
    concurrent = time.perf_counter() - started
    return {
        "n": n,
        "requests": count,
        "sequential_s": sequential,
        "concurrent_s": concurrent,
        "batches": client.health()["batches_served"] - before,
        "speedup": sequential / concurrent,
    }


def run_baseline(spec: Any, fingerprint: Fingerprint, calls: int) -> dict[str, Any]:
    """The original project's loop: one sample per generate call, max_length=200."""
    import torch

    from model.sampler import Sampler
    from model.textformat import END_MARKER, build_prompt, parse_completion

    sampler = Sampler.load(spec, spec.adapter, data_dir=spec.data_dir)
    tokenizer, model = sampler.tokenizer, sampler.model
    prompt = tokenizer(build_prompt(), return_tensors="pt").to(sampler.device)
    novel: list[str] = []
    tokens = 0
    started = time.perf_counter()
    for _ in range(calls):
        with torch.inference_mode():
            out = model.generate(
                **prompt,
                max_length=200,
                do_sample=True,
                temperature=1.0,
                top_p=0.95,
                pad_token_id=tokenizer.pad_token_id,
            )
        new = out[0, prompt["input_ids"].shape[1] :]
        tokens += int(new.shape[0])
        text = tokenizer.decode(new, skip_special_tokens=True)
        first = text.split(END_MARKER, 1)[0] + END_MARKER
        name = parse_completion(first)
        if name is not None and fingerprint.match(name) is None and name not in novel:
            novel.append(name)
    wall = time.perf_counter() - started
    return {
        "calls": calls,
        "novel": len(novel),
        "wall_s": wall,
        "s_per_call": wall / calls,
        "tokens_per_call": tokens / calls,
        "genres_per_s": len(novel) / wall,
        "examples": novel[:5],
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    config = load_config(args.config)
    client = make_local_client(config)
    if args.adapter is not None:
        client.spec = client.spec.with_adapter(None if args.adapter == "none" else args.adapter)
    overrides: dict[str, Any] = {"request_timeout_s": 900.0, "queue_size": 1024}
    if args.max_batch_size:
        overrides["max_batch_size"] = args.max_batch_size
    client.settings = dataclasses.replace(client.settings, **overrides)
    spec = client.spec
    fingerprint, fp_source = load_fingerprint(spec.adapter)
    moderator = None
    if not args.no_moderation:
        from model.filters import Moderator

        moderator = Moderator()
    pipeline = GenrePipeline(client, fingerprint, moderator, min_request=args.min_request)
    report: dict[str, Any] = {
        "base_model": spec.base_model,
        "adapter": spec.adapter,
        "fingerprint": fp_source,
        "settings": dataclasses.asdict(client.settings),
        "min_request": args.min_request,
    }
    print(f"base model: {spec.base_model}; adapter: {spec.adapter or 'none (base model only)'}")
    print(f"known genres: {fp_source}; moderation: {'off' if moderator is None else 'on'}")
    started = time.perf_counter()
    async with client:
        report["load_s"] = time.perf_counter() - started
        print(f"worker ready in {report['load_s']:.1f} s: {client.model_name}")
        try:  # warm-up (also primes the pipeline's yield estimate)
            await pipeline.generate(1)
        except GenerationError as exc:
            print(f"warm-up: {exc}")
        levels = []
        for users in args.levels:
            per_user = max(1, 32 // users)
            result = await run_level(pipeline, client, users, per_user)
            levels.append(result)
            print(
                f"  level {users:>3}: {result['genres']:>4} genres in {result['wall_s']:6.1f} s "
                f"= {result['genres_per_s']:5.2f}/s, p50 {result['p50_s']:.2f} s, "
                f"p95 {result['p95_s']:.2f} s, {result['rows_per_batch']:.0f} rows/batch",
                flush=True,
            )
        report["levels"] = levels
        report["raw"] = await raw_speedup(client, args.raw_n)
        raw = report["raw"]
        print(
            f"  raw: 32 x n={raw['n']} sequential {raw['sequential_s']:.2f} s, concurrent "
            f"{raw['concurrent_s']:.2f} s ({raw['batches']} batches)",
            flush=True,
        )
        report["worker_rss_mib"] = client.health()["rss_bytes"] / 2**20
    by_users = {level["users"]: level for level in levels}
    if 1 in by_users and 32 in by_users:
        report["speedup_32"] = by_users[1]["wall_s"] / by_users[32]["wall_s"]
    if args.baseline_calls:
        print(f"baseline: {args.baseline_calls} calls of generate(max_length=200) ...", flush=True)
        report["baseline"] = await asyncio.to_thread(
            run_baseline, spec, fingerprint, args.baseline_calls
        )
    return report


def print_table(report: dict[str, Any]) -> None:
    print()
    print("| concurrent users | requests | novel genres | failed | genres/s | p50 latency "
          "| p95 latency | rows/batch |")  # fmt: skip
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for level in report["levels"]:
        print(
            f"| {level['users']} | {level['requests']} | {level['genres']} "
            f"({level['distinct']} distinct) | {level['failures']} | {level['genres_per_s']:.2f} "
            f"| {level['p50_s']:.2f} s | {level['p95_s']:.2f} s | {level['rows_per_batch']:.0f} |"
        )
    print()
    if "speedup_32" in report:
        print(
            f"32 concurrent vs 32 sequential one-genre pipeline calls: "
            f"{report['speedup_32']:.1f}x faster"
        )
    raw = report["raw"]
    print(
        f"32 concurrent vs 32 sequential raw requests (n={raw['n']} each): "
        f"{raw['speedup']:.1f}x faster ({raw['sequential_s']:.2f} s vs {raw['concurrent_s']:.2f} s)"
    )
    print(f"worker RSS: {report['worker_rss_mib']:.0f} MiB; model load {report['load_s']:.1f} s")
    baseline = report.get("baseline")
    if baseline:
        print(
            f"original loop (one genre per call, max_length=200): {baseline['s_per_call']:.2f} s "
            f"per call, {baseline['tokens_per_call']:.0f} tokens per call, {baseline['novel']} "
            f"novel in {baseline['calls']} calls = {baseline['genres_per_s']:.3f} novel genres/s"
        )
        best = max(level["genres_per_s"] for level in report["levels"])
        if baseline["genres_per_s"] > 0:
            print(f"worker (best level) vs original loop: {best / baseline['genres_per_s']:.0f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=None, help="TOML config (default: ./config.toml)")
    parser.add_argument(
        "--levels",
        default="1,8,32,128",
        type=lambda text: [int(v) for v in text.split(",")],
        help="concurrency levels (default 1,8,32,128)",
    )
    parser.add_argument("--adapter", default=None, help="adapter folder, or 'none' for the base")
    parser.add_argument("--max-batch-size", type=int, default=0, help="override [worker]")
    parser.add_argument("--min-request", type=int, default=8, help="pipeline's smallest n")
    parser.add_argument("--raw-n", type=int, default=5, help="n of the raw batching test")
    parser.add_argument("--baseline-calls", type=int, default=5, help="0 skips the baseline")
    parser.add_argument("--no-moderation", action="store_true")
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    args = parser.parse_args()
    report = asyncio.run(main_async(args))
    print_table(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
