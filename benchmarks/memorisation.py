"""How much more likely an adapter makes the genres it was trained on than held-out real ones.

    MICROGENRE_MODEL_THREADS=1 .venv/bin/python benchmarks/memorisation.py \
        data/adapters/default-v3 data/dataset-v3 [--json out.json]

Every distinct genre of the dataset's training and dev (validation) splits is scored under the
plain ``genre:`` prompt: its summed log-probability, end marker included, i.e. the chance that
one sample at temperature 1 is exactly that genre. Prints, per split, the median, the total
probability mass, how concentrated it is (the share held by the likeliest 100, 500 and 1,000
genres), and how many genres and how much mass lie above a few floors (what ``train
--copy-floor`` would hold back). A small gap between the two medians means the model mostly
generalises: a floor on training genres then also lowers the held-out ones it should re-invent.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def scores(model: Any, tokenizer: Any, genres: list[str]) -> dict[str, float]:
    import torch

    from model.dataset import Example
    from model.train._common import collate, encode, sequence_nll

    encoded = encode(tokenizer, [Example(genre=g, like=None) for g in genres])
    out: dict[str, float] = {}
    for start in range(0, len(encoded), 64):
        rows = list(range(start, min(start + 64, len(encoded))))
        ids, mask, labels = collate(encoded, rows, int(tokenizer.pad_token_id))
        with torch.inference_mode():
            nll = sequence_nll(model(input_ids=ids, attention_mask=mask).logits, labels)
        for row, value in zip(rows, nll.tolist(), strict=True):
            out[genres[row]] = -value
    return out


def summary(logps: list[float], floors: list[float]) -> dict[str, object]:
    ranked = sorted(logps, reverse=True)
    mass = [math.exp(x) for x in ranked]
    total = sum(mass)
    return {
        "genres": len(ranked),
        "median_logp": round(statistics.median(ranked), 2),
        "mass_t1": round(total, 4),
        "top_share": {k: round(sum(mass[:k]) / total, 3) for k in (100, 500, 1000)},
        "above_floor": {
            str(f): {
                "genres": sum(x > -f for x in ranked),
                "mass": round(sum(m for x, m in zip(ranked, mass, strict=True) if x > -f), 4),
            }
            for f in floors
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("adapter")
    parser.add_argument("dataset")
    parser.add_argument("--floors", default="9,10,11,12")
    parser.add_argument("--json", default=None, help="also write every genre's score here")
    args = parser.parse_args()

    from peft import PeftModel

    from model.base import ModelSpec, load_model
    from model.dataset import read_examples

    loaded = load_model(ModelSpec(), data_dir=ROOT / "data", progress=None)
    model = PeftModel.from_pretrained(loaded.model, args.adapter).merge_and_unload().eval()
    floors = [float(x) for x in args.floors.split(",")]
    report: dict[str, object] = {"adapter": args.adapter, "dataset": args.dataset}
    every: dict[str, dict[str, float]] = {}
    for split in ("train", "valid"):
        genres = sorted({e.genre for e in read_examples(Path(args.dataset) / f"{split}.jsonl")})
        every[split] = scores(model, loaded.tokenizer, genres)
        report[split] = summary(list(every[split].values()), floors)
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps({**report, "scores": every}), encoding="utf-8")


if __name__ == "__main__":
    main()
