"""How close "More like this" stays to its source: the share of variations that share a word,
or a word of a real related genre, with the genre they vary.

    .venv/bin/python benchmarks/bench_variations.py [--config config.toml] [--sources 20]
        [--weirdness 2] [--seed 0] [--concurrency 4] [--json PATH]

The sources are ``--sources`` genres of the validation split (built from
``../shared/data/genres.csv`` with the training seed, as ``microgenre eval --from-csv`` does);
without the shared data, a fixed list of invented names. Each gets one "More like this" through
the bot's real path minus Discord: ``GenreService.deliver`` (fair queue, the server's model,
reservation) over the production ``PipelineGenerator`` and the configured worker (by default
the shipped adapter), asking for 3 variations conditioned on the source (``like:`` its name) at
``--weirdness``, ``--concurrency`` sources at a time (4), as a busy server would. A variation
honours its source when it shares a word with it (``model.filters.theme_words``), else when it
shares a word with a real genre related to the source (``model.evaluate.related_words``: the
training split's ``like:`` pairs and the genres' parents). Target: at least 80 %.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))

# Used only without ../shared/data: invented names like the bot's.
FALLBACK_SOURCES = [
    "bubblegrunge", "midwest shoegaze", "dutch witch house", "glacier dub", "tidal polka",
    "harbour twee", "neon sludge", "copper drone", "finnish doom jazz", "velvet grime",
    "moss chant", "static waltz", "amber trap", "lo-fi tape jazz", "polder grime",
    "glass harp dub", "sunny sludge", "arctic cumbia", "baroque drill", "desert shoegaze",
]  # fmt: skip


def sources_and_related(n: int, seed: int) -> tuple[list[str], dict[str, frozenset[str]], str]:
    from model.dataset import build_dataset, records_from_genres_csv
    from model.evaluate import related_words

    table = SHARED / "genres.csv"
    if not table.is_file():
        return FALLBACK_SOURCES[:n], {}, "fixed list (no ../shared/data)"
    records = records_from_genres_csv(table)
    dataset = build_dataset(records, seed=0)
    valid = sorted({e.genre for e in dataset.valid})
    sources = random.Random(seed).sample(valid, min(n, len(valid)))
    return sources, related_words(dataset.train, records), "validation split of genres.csv"


def honours(source: str, variation: str, related: dict[str, frozenset[str]]) -> str | None:
    """ "word", "related" or None: how ``variation`` stays close to ``source``.

    >>> honours("midwest shoegaze", "shoegaze revival", {})
    'word'
    >>> honours("shoegaze", "dream pop noise", {"shoegaze": frozenset({"dream"})})
    'related'
    """
    from model.filters import theme_words
    from scraping.normalize import genre_key

    words = theme_words(variation)
    if theme_words(source) & words:
        return "word"
    if related.get(genre_key(source), frozenset()) & words:
        return "related"
    return None


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from bot.config import load_config
    from bot.lineage import VARIATION, Lineage
    from bot.queue import FairQueue, QueueSettings
    from bot.service import GenreRequest, GenreService, create_generator
    from bot.store import schema
    from bot.store.engine import create_engine, create_sessionmaker

    config = load_config(args.config)
    sources, related, origin = sources_and_related(args.sources, args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="bench-variations-"))
    url = f"sqlite+aiosqlite:///{tmp / 'bench.db'}"
    await asyncio.to_thread(schema.upgrade, url, "head")
    engine = create_engine(url)
    started = time.perf_counter()
    generator = await create_generator(config)
    loaded_s = time.perf_counter() - started
    service = GenreService(
        generator,
        create_sessionmaker(engine),
        queue=FairQueue(QueueSettings.from_config(config.bot)),
    )
    try:
        await service.start()
        started = time.perf_counter()
        limit = asyncio.Semaphore(args.concurrency)

        async def vary(i: int, source: str) -> list[str] | str:
            request = GenreRequest(
                3,
                guild_id=1,
                user_id=i,
                like=source,
                weirdness=args.weirdness,
                lineage=Lineage(VARIATION, None, source),
            )
            async with limit:
                try:
                    return (await service.deliver(request)).genres
                except Exception as exc:  # reported per source, the others still count
                    return f"{type(exc).__name__}: {exc}"

        deliveries = await asyncio.gather(*(vary(i, s) for i, s in enumerate(sources)))
        generate_s = time.perf_counter() - started
    finally:
        await service.close()
        await engine.dispose()
    rows = []
    counts = {"word": 0, "related": 0, None: 0}
    errors = {}
    for source, delivery in zip(sources, deliveries, strict=True):
        if isinstance(delivery, str):
            errors[source] = delivery
            delivery = []
        verdicts = [honours(source, g, related) for g in delivery]
        for v in verdicts:
            counts[v] += 1
        rows.append({"source": source, "variations": delivery, "verdicts": verdicts})
    total = sum(counts.values())
    share = (counts["word"] + counts["related"]) / max(total, 1)
    return {
        "sources": len(sources),
        "origin": origin,
        "weirdness": args.weirdness,
        "adapter": config.model.adapter or "shipped default",
        "variations": total,
        "short": sum(1 for r in rows if len(r["variations"]) < 3),
        "errors": errors,
        "share_word": round(counts["word"] / max(total, 1), 3),
        "share": round(share, 3),
        "target": 0.8,
        "pass": share >= 0.8,
        "worker_start_s": round(loaded_s, 1),
        "generate_s": round(generate_s, 1),
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=None)
    parser.add_argument("--sources", type=int, default=20)
    parser.add_argument("--weirdness", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--concurrency", type=int, default=4, help="Sources varied at once (a busy server)."
    )
    parser.add_argument("--json", dest="json_path", default=None)
    args = parser.parse_args()
    result = asyncio.run(run(args))
    for row in result["rows"]:
        marks = " ".join("✓" if v else "✗" for v in row["verdicts"])
        print(f"{row['source']:<32} {marks:<6} {', '.join(row['variations'])}")
    print(
        f"{result['variations']} variations of {result['sources']} sources ({result['origin']}), "
        f"weirdness {result['weirdness']}: {result['share']:.0%} share a word or a related "
        f"genre's word ({result['share_word']:.0%} a word), target 80 %: "
        f"{'PASS' if result['pass'] else 'FAIL'}; {result['short']} sources got fewer than 3; "
        f"worker start {result['worker_start_s']} s, generation {result['generate_s']} s"
    )
    for source, error in result["errors"].items():
        print(f"failed: {source}: {error}")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
