"""Taste benchmark: does a server run teach a server's taste from its 👍/👎 votes?

    .venv/bin/python benchmarks/bench_taste.py [--seed 0] [--votes 600] [--per-theme 30] [-n 300]

Simulates a server that likes metal and dislikes pop. With the shipped adapter, through
:class:`GenrePipeline` (in-process :class:`~model.sampler.LocalBackend`), it generates
``--votes`` genres and votes the first ``--per-theme`` of each theme: 👍 on those with a word
containing a metal word (:data:`THEME`), 👎 on those with a word containing "pop"
(:data:`DISLIKED`) and no metal word; the rest get no vote. It then runs
the server run exactly as the bot does (``microgenre server-run --votes FILE --from-adapter
DEFAULT --progress-json``, a subprocess, timed) and generates again with the new adapter. Reported:

* each theme's share of delivered genres before and after (the goals: the 👍 theme at least
  2x, the 👎 theme at most half);
* delivered novelty (not a real genre, not a near-copy of one, not one of the server's earlier
  genres: 100 % by construction of the pipeline) and the raw well-formed rate (>= 95 %);
* the server run's wall time (<= 5 min on the 2-core machine);
* another server, on the default adapter with a fixed seed, gets the same genres before and
  after the run (its adapter folder is untouched; the sampler is reloaded from disk).

The dataset the run replays is built from ``../shared/data/genres.csv``, as the shipped
adapter's was. The JSON report goes to ``benchmarks/out/taste-seed<N>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))

#: A word of a genre containing one of these makes it "metal" (so "metalcore", "deathgrind").
THEME = (
    "metal",
    "doom",
    "thrash",
    "sludge",
    "black",
    "death",
    "grind",
    "core",
    "heavy",
    "stoner",
    "djent",
    "crust",
    "goth",
    "speed",
    "power",
    "drone",
)
#: A word of a genre containing one of these (and no :data:`THEME` word) makes it "pop".
DISLIKED = ("pop",)
OTHER_SERVER_SEED = 4242


def on_theme(name: str) -> bool:
    """True when a word of ``name`` contains a theme word.

    >>> on_theme("Blackened Polka"), on_theme("doom-jazz"), on_theme("sunny pop")
    (True, True, False)
    """
    from scraping.normalize import genre_key

    return any(t in word for word in genre_key(name).split() for t in THEME)


def disliked(name: str) -> bool:
    """True when a word of ``name`` contains a :data:`DISLIKED` word and none a theme word.

    >>> disliked("k-pop sludge"), disliked("sunny pop"), disliked("polka")
    (False, True, False)
    """
    from scraping.normalize import genre_key

    words = genre_key(name).split()
    return not on_theme(name) and any(t in word for word in words for t in DISLIKED)


def load_pipeline(adapter: Path, fingerprint: Any, args: argparse.Namespace) -> Any:
    from model.base import ModelSpec
    from model.pipeline import GenrePipeline
    from model.sampler import LocalBackend, Sampler

    spec = ModelSpec(device="cpu", threads=args.threads)
    sampler = Sampler.load(spec, adapter, data_dir=args.data_dir)
    return GenrePipeline(LocalBackend(sampler), fingerprint, share_rounds=False)


def generate(pipeline: Any, n: int, seed: int, exclude: list[str]) -> dict[str, Any]:
    """``n`` delivered genres and the rates the benchmark reports."""
    from model.filters import near_key

    started = time.perf_counter()
    outcome = asyncio.run(pipeline.generate(n, seed=seed, exclude=exclude))
    verdicts = [v for _, v in outcome.candidates]
    bad = sum(v == "truncated" or v.startswith("malformed") for v in verdicts)
    history = {near_key(e) for e in exclude}
    novel = [
        g
        for g in outcome.genres
        if pipeline.fingerprint.match(g) is None and near_key(g) not in history
    ]
    return {
        "genres": outcome.genres,
        "theme_share": sum(map(on_theme, outcome.genres)) / max(len(outcome.genres), 1),
        "disliked_share": sum(map(disliked, outcome.genres)) / max(len(outcome.genres), 1),
        "delivered_novel": len(novel) / max(len(outcome.genres), 1),
        "raw_well_formed": 1 - bad / max(len(verdicts), 1),
        "raw": len(verdicts),
        "wall_s": round(time.perf_counter() - started, 1),
    }


def server_run(dataset: Path, votes: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Run ``microgenre server-run`` as the bot does; its last event and wall time."""
    from model.artifacts import DEFAULT_ADAPTER_DIR

    command = [sys.executable, "-m", "bot", "server-run", "--dataset", str(dataset)]
    command += ["--from-adapter", str(DEFAULT_ADAPTER_DIR), "--votes", str(votes)]
    command += ["--output", str(out), "--progress-json", "--seed", str(args.seed)]
    command += args.train_args
    env = {**os.environ, "MICROGENRE_PATHS_DATA_DIR": str(args.data_dir)}
    env["MICROGENRE_MODEL_THREADS"] = str(args.threads)
    started = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"server run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    steps = [e["elapsed_s"] for e in events if e["event"] == "step"]
    card = json.loads((out / "model_card.json").read_text())
    return {
        "wall_s": round(wall, 1),
        "first_step_at_s": steps[0] if steps else None,
        "s_per_step": round((steps[-1] - steps[0]) / (len(steps) - 1), 2)
        if len(steps) > 1
        else None,
        "done": events[-1],
        "training": card["training"],
    }


def folder_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def run(args: argparse.Namespace) -> dict[str, Any]:
    from model.artifacts import DEFAULT_ADAPTER_DIR
    from model.dataset import Vote, build_dataset, records_from_genres_csv, write_dataset
    from model.filters import Fingerprint

    seed = args.seed
    default_hash = folder_hash(DEFAULT_ADAPTER_DIR)
    with tempfile.TemporaryDirectory(prefix="bench-taste-") as tmp:
        dataset = write_dataset(
            build_dataset(records_from_genres_csv(SHARED / "genres.csv")), Path(tmp) / "ds"
        )
        fingerprint = Fingerprint.load(dataset / "known.fingerprint")
        pipeline = load_pipeline(DEFAULT_ADAPTER_DIR, fingerprint, args)
        other_before = generate(pipeline, args.other_n, OTHER_SERVER_SEED, [])["genres"]
        voted = generate(pipeline, args.votes, seed * 1000 + 1, [])
        names = voted["genres"]
        ups = [g for g in names if on_theme(g)][: args.per_theme]
        downs = [g for g in names if disliked(g)][: args.per_theme]
        votes = [Vote(g, "up") for g in ups] + [Vote(g, "down") for g in downs]
        before = generate(pipeline, args.n, seed * 1000 + 2, names)
        del pipeline
        votes_file = Path(tmp) / "votes.jsonl"
        votes_file.write_text("".join(json.dumps(v.__dict__) + "\n" for v in votes))
        adapter = Path(tmp) / "server-adapter"
        trained = server_run(dataset, votes_file, adapter, args)
        after = generate(load_pipeline(adapter, fingerprint, args), args.n, seed * 1000 + 2, names)
        other = load_pipeline(DEFAULT_ADAPTER_DIR, fingerprint, args)
        other_after = generate(other, args.other_n, OTHER_SERVER_SEED, [])["genres"]
    ups_count = sum(v.desirable for v in votes)
    return {
        "seed": seed,
        "votes": {"up": ups_count, "down": len(votes) - ups_count},
        "before": {k: v for k, v in before.items() if k != "genres"},
        "after": {k: v for k, v in after.items() if k != "genres"},
        "theme_ratio": round(after["theme_share"] / max(before["theme_share"], 1e-9), 2),
        "disliked_ratio": round(after["disliked_share"] / max(before["disliked_share"], 1e-9), 2),
        "server_run": trained,
        "other_server_unchanged": other_before == other_after,
        "default_adapter_unchanged": folder_hash(DEFAULT_ADAPTER_DIR) == default_hash,
        "samples_after": [g for g in after["genres"] if on_theme(g)][:15],
        "samples_after_off_theme": [g for g in after["genres"] if not on_theme(g)][:10],
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "train_args": args.train_args,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--votes", type=int, default=600, help="genres generated to vote on")
    parser.add_argument("--per-theme", type=int, default=30, help="votes per theme (up, down)")
    parser.add_argument("-n", type=int, default=300, help="genres measured before and after")
    parser.add_argument("--other-n", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data")
    parser.add_argument("train_args", nargs="*", help="extra `microgenre server-run` options")
    args = parser.parse_args()
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    report = run(args)
    out = ROOT / "benchmarks" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"taste-seed{args.seed}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if not k.startswith("samples")}, indent=2))


if __name__ == "__main__":
    main()
