"""Training speed benchmark on the real data: seconds per step and the projected full run.

    .venv/bin/python benchmarks/bench_train.py [--steps 20] [--config '{"first_layer": 15}']
    .venv/bin/python benchmarks/bench_train.py --full   # the whole run, as `microgenre train`

Builds the dataset from ``../shared/data/genres.csv`` (as the shipped adapter was), trains
``--steps`` steps with the default hyper-parameters (or the JSON overrides) and prints the
measured seconds per step and the projected wall time of the configured number of epochs.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--config", default="{}", help="JSON TrainConfig overrides")
    parser.add_argument("--full", action="store_true", help="run every epoch")
    parser.add_argument("--data-dir", default=str(ROOT / "data"))
    args = parser.parse_args()

    from model.dataset import build_dataset, records_from_genres_csv, write_dataset
    from model.train.sft import TrainConfig, train

    overrides: dict[str, Any] = json.loads(args.config)
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        ds = build_dataset(records_from_genres_csv(SHARED / "genres.csv"))
        folder = write_dataset(ds, Path(tmp) / "dataset")
        cfg = TrainConfig(**overrides)
        if not args.full:
            cfg = TrainConfig(**{**cfg.to_dict(), "max_steps": args.steps, "max_valid": 128})
        stamps: list[float] = []

        def progress(event: dict[str, Any]) -> None:
            if event["event"] == "step":
                stamps.append(time.perf_counter())

        start = time.perf_counter()
        result = train(
            folder, Path(tmp) / "adapter", cfg, progress=progress, data_dir=args.data_dir
        )
        total = time.perf_counter() - start
    gaps = [b - a for a, b in itertools.pairwise(stamps)][2:] or [total]
    per_step = sum(gaps) / len(gaps)
    steps_per_epoch = math.ceil(len(ds.train) / cfg.batch_size)
    report = {
        "config": {
            k: v
            for k, v in cfg.to_dict().items()
            if k in overrides
            or k in ("epochs", "batch_size", "lora_r", "target_modules", "first_layer", "dtype")
        },
        "train_examples": len(ds.train),
        "steps_run": result.steps,
        "s_per_step": round(per_step, 3),
        "steps_per_epoch": steps_per_epoch,
        "projected_epochs_min": round(per_step * steps_per_epoch * cfg.epochs / 60, 1),
        "wall_s": round(total, 1),
        "valid_losses": [round(v, 4) for v in result.valid_losses],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
