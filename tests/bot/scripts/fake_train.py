"""Stands in for `microgenre server-run --progress-json`: prints TrainEvent lines.

Usage: fake_train.py MODE [STEP_DELAY_S] --progress-json --output DIR [--extra-genres FILE]
                    [--votes FILE] [--from-adapter DIR]
The adapter it writes holds copies of the extra genres and votes files, and ``argv.json``.
MODE: ok (writes an adapter), ok-curve (also a ``loss_curve.png`` in it, as the real trainer
draws one: a copy of the shipped adapter's, so the bot has none to draw; benchmarks/soak.py),
fail (reports an error event and exits 1).
"""

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from model.events import EventKind, StopReason, TrainEvent

# What the real trainer would draw; the shipped adapter's curve stands in for it.
CURVE = Path(__file__).resolve().parents[3] / "model" / "default_adapter" / "loss_curve.png"


def emit(kind: EventKind, **values: Any) -> None:
    print(TrainEvent(kind, **values).to_json(), flush=True)


def main() -> int:
    args = sys.argv[1:]
    mode = args[0]
    delay = float(args[1]) if len(args) > 1 and not args[1].startswith("--") else 0.0
    output = Path(args[args.index("--output") + 1])
    extra = args[args.index("--extra-genres") + 1] if "--extra-genres" in args else None
    votes = args[args.index("--votes") + 1] if "--votes" in args else None
    total = 6

    # Like the real trainer: checkpoints go to <output>.work while training runs.
    checkpoints = output.with_name(output.name + ".work")
    checkpoints.mkdir(parents=True, exist_ok=True)
    (checkpoints / "checkpoint.pt").write_text("pretend")
    # Like the real server run: a dataset folder, named in the start and done events.
    dataset = output.parent.parent / "datasets" / output.name
    dataset.mkdir(parents=True, exist_ok=True)
    emit(EventKind.START, step=0, total_steps=total, dataset=str(dataset))
    for step in range(1, total + 1):
        time.sleep(delay)
        if mode == "fail" and step == 3:
            emit(
                EventKind.ERROR,
                message="CUDA out of memory (pretend)",
                stop_reason=StopReason.FAILED,
            )
            return 1
        emit(
            EventKind.STEP,
            step=step,
            total_steps=total,
            loss=3.0 / step,
            eta_s=(total - step) * delay,
        )
        if step % 3 == 0:
            emit(EventKind.EPOCH, epoch=step // 3, step=step, total_steps=total, loss=3.0 / step)
    work = output.with_name(output.name + ".tmp")
    work.mkdir(parents=True, exist_ok=True)
    (work / "adapter_config.json").write_text("{}")
    (work / "env.json").write_text(json.dumps({"DISCORD_TOKEN": os.environ.get("DISCORD_TOKEN")}))
    if extra:
        shutil.copy(extra, work / "extra_genres.txt")
    if votes:
        shutil.copy(votes, work / "votes.jsonl")
    (work / "argv.json").write_text(json.dumps(args))
    if mode == "ok-curve":
        shutil.copy(CURVE, work / "loss_curve.png")
    work.rename(output)
    shutil.rmtree(checkpoints)
    emit(
        EventKind.DONE,
        step=total,
        total_steps=total,
        loss=0.5,
        stop_reason=StopReason.COMPLETED,
        output=str(output),
        dataset=str(dataset),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
