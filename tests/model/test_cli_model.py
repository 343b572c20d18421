"""The model commands of the CLI, on a tiny model and small files (no SmolLM2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.cli import entry
from model.filters import Fingerprint

CSV = """genre,source,parent
post rock,everynoise,rock
dream pop,everynoise,pop
midwest emo,everynoise,emo
dark ambient,wikipedia,ambient
detroit techno,rym,techno
acid jazz,discogs,jazz
nu metal,rym,metal
vaporwave,everynoise,
"""


@pytest.fixture
def genres_csv(tmp_path: Path) -> Path:
    path = tmp_path / "genres.csv"
    path.write_text(CSV)
    return path


def test_dataset_build_from_csv(
    genres_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ds"
    code = entry(["dataset", "build", "--from-csv", str(genres_csv), "--output", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "training examples" in printed and "top leading words" in printed
    for name in ("train.jsonl", "valid.jsonl", "known.fingerprint", "stats.json"):
        assert (out / name).is_file()
    fp = Fingerprint.load(out / "known.fingerprint")
    assert "post-rock" in fp and "vaporwave" in fp and "space rock" not in fp


def test_dataset_build_without_store_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert entry(["dataset", "build"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Error:") and "--from-csv" in err and "Traceback" not in err


def test_dataset_build_from_the_store(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import asyncio

    from bot.store import schema
    from bot.store.engine import create_engine, create_sessionmaker
    from bot.store.models import ORIGIN_TRAINING, Genre

    asyncio.run(asyncio.to_thread(schema.upgrade, sqlite_url, "head"))

    async def seed() -> None:
        engine = create_engine(sqlite_url)
        sessions = create_sessionmaker(engine)
        async with sessions.begin() as session:
            for name in ("post rock", "dream pop", "acid jazz", "nu metal", "vaporwave"):
                session.add(Genre(name=name, display_name=name, origin=ORIGIN_TRAINING))
        await engine.dispose()

    asyncio.run(seed())
    monkeypatch.setenv("MICROGENRE_DATABASE_URL", sqlite_url)
    out = tmp_path / "ds"
    assert entry(["dataset", "build", "--output", str(out), "--json"]) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["source"] == "store" and stats["known_genres"] == 5


def test_train_progress_json_and_generate_with_tiny_model(
    tiny_model_path: Path,
    genres_csv: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MICROGENRE_MODEL_BASE_MODEL", str(tiny_model_path))
    monkeypatch.setenv("MICROGENRE_MODEL_DTYPE", "float32")
    monkeypatch.setenv("MICROGENRE_MODEL_THREADS", "1")
    extra = tmp_path / "extra.txt"
    extra.write_text("glacier pop\n\nswamp techno\n")
    out = tmp_path / "adapter"
    code = entry(
        [
            "train",
            "--from-csv",
            str(genres_csv),
            "--extra-genres",
            str(extra),
            "--output",
            str(out),
            "--epochs",
            "1",
            "--batch-size",
            "2",
            "--copy-floor",
            "30",
            "--copy-weight",
            "0.25",
            "--progress-json",
        ]
    )
    assert code == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events[0]["event"] == "start" and events[-1]["event"] == "done"
    assert {"step", "total_steps", "loss", "eta_s"} <= events[1].keys()
    card = json.loads((out / "model_card.json").read_text())
    assert card["data"]["dataset"]["extra_genres"] == 2
    assert card["hyperparameters"]["copy_floor"] == 30.0
    assert card["hyperparameters"]["copy_weight"] == 0.25
    # The random tiny model cannot write genres: generate fails with one readable line.
    code = entry(["generate", "-n", "2", "--adapter", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and "acceptable genres" in err and "Traceback" not in err


def test_train_progress_json_reports_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = entry(["train", "--dataset", str(tmp_path / "missing"), "--progress-json"])
    assert code == 2
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events == [{"event": "error", "message": events[0]["message"], "stop_reason": "failed"}]
    assert "dataset" in events[0]["message"]


def test_generate_with_missing_adapter(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert entry(["generate", "--adapter", str(tmp_path)]) == 2
    assert "not a LoRA adapter folder" in capsys.readouterr().err


def test_dataset_build_source_weights_and_like_fraction(genres_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    args = [
        "dataset",
        "build",
        "--from-csv",
        str(genres_csv),
        "--output",
        str(out),
        "--valid-fraction",
        "0",
    ]
    assert entry([*args, "--source-weight", "rym=0", "--like-fraction", "1"]) == 0
    stats = json.loads((out / "stats.json").read_text())
    train = [json.loads(line)["genre"] for line in (out / "train.jsonl").read_text().splitlines()]
    assert "nu metal" not in train and "detroit techno" not in train and "post rock" in train
    assert stats["source_weights"] == {"rym": 0.0} and stats["source_thinned"] == 2
    assert stats["like_fraction"] == 1.0
    # Known genres keep every source: a thinned genre is still not novel.
    assert "nu metal" in Fingerprint.load(out / "known.fingerprint")


@pytest.mark.parametrize("weight", ["rym", "rym=2", "=0.5", "rym=x"])
def test_bad_source_weight_is_a_one_line_error(
    weight: str, genres_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["dataset", "build", "--from-csv", str(genres_csv), "--output", str(tmp_path / "d")]
    assert entry([*args, "--source-weight", weight]) == 2
    err = capsys.readouterr().err
    assert "--source-weight" in err and "Traceback" not in err
    assert not (tmp_path / "d").exists()  # nothing written


def test_dataset_build_holds_out_a_dev_and_a_lockbox_tenth(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from model.splits import read_lockbox

    words = ["velvet", "harbour", "glacier", "copper", "neon", "moss", "tidal", "amber"]
    heads = ["polka", "drone", "dub", "gaze", "trap", "waltz", "grime", "chant", "jazz", "rock"]
    rows = [f"{a} {b},everynoise,{b}" for a in words for b in heads]
    rows += [f"{a} {b} fusion,rym,{a} {b}|{b}" for a in words for b in heads]
    path = tmp_path / "genres.csv"
    path.write_text("genre,source,parent\n" + "\n".join(rows) + "\n")
    out = tmp_path / "ds"
    assert entry(["dataset", "build", "--from-csv", str(path), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    stats = json.loads((out / "stats.json").read_text())
    lockbox = read_lockbox(out)
    assert stats["split"] == "everynoise-holdout" and lockbox and stats["valid"] > 0
    assert f"lockbox {len(lockbox)}" in printed and "blend" in printed
    # Held out of training, not out of reality: the fingerprint served with the adapter knows them.
    fp = Fingerprint.load(out / "known.fingerprint")
    assert all(fp.match(g.genre) == "known" for g in lockbox)
    trained = (out / "train.jsonl").read_text(encoding="utf-8")
    assert not any(f'"{g.genre}"' in trained for g in lockbox)
    other = tmp_path / "random"
    args = ["dataset", "build", "--from-csv", str(path), "--output", str(other)]
    assert entry([*args, "--split", "random", "--valid-fraction", "0.2"]) == 0
    assert not (other / "lockbox.jsonl").exists()
    assert json.loads((other / "stats.json").read_text())["split"] == "random"
