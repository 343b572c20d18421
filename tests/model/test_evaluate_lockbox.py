"""`microgenre eval` under the held-out protocol: dev by default, `--lockbox` logged in the card,
structure, `like:` and blend rates reported (the real command, a scripted sampler)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import bot.cli.evaluate as cli_evaluate
from bot.cli import entry
from model.artifacts import DEFAULT_ADAPTER_DIR, read_card
from model.events import EvalResult
from tests.model.test_evaluate_cli import HEADS, WORDS, GenreSampler

ROWS = [f"{a} {b},everynoise,{b}" for a in WORDS for b in HEADS]
# RYM lists every Every Noise name under two parents: its head and its word's family.
ROWS += [f"{a} {b},rym,{b}|{a} music" for a in WORDS for b in HEADS]
ROWS += [f"{a} music,wikipedia," for a in WORDS] + [
    f"{b} {a} revival,rym,{a} {b}" for a in WORDS for b in HEADS[:3]
]


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    csv = tmp_path / "genres.csv"
    csv.write_text("genre,source,parent\n" + "\n".join(ROWS) + "\n")
    out = tmp_path / "ds"
    assert entry(["dataset", "build", "--from-csv", str(csv), "--output", str(out)]) == 0
    return out


@pytest.fixture
def adapter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An adapter folder with a card (the sampler is scripted: no weights are loaded)."""
    folder = tmp_path / "adapter"
    folder.mkdir()
    shutil.copy(DEFAULT_ADAPTER_DIR / "adapter_config.json", folder / "adapter_config.json")
    # A fresh adapter's card: the shipped one records its own lockbox read and results.
    card = json.loads((DEFAULT_ADAPTER_DIR / "model_card.json").read_text(encoding="utf-8"))
    fresh = {k: v for k, v in card.items() if k not in ("lockbox_reads", "eval_lockbox")}
    (folder / "model_card.json").write_text(json.dumps(fresh), encoding="utf-8")
    monkeypatch.setattr(cli_evaluate, "load_sampler", lambda config, adapter: GenreSampler())
    return folder


def _eval(dataset: Path, adapter: Path, out: Path, *extra: str) -> int:
    args = ["eval", "-n", "20", "--dataset", str(dataset), "--adapter", str(adapter)]
    args += ["--seeds", "1", "--levels", "2", "--likes", "0", "--json-out", str(out)]
    return entry([*args, *extra])


def test_the_dev_evaluation_never_reads_the_lockbox(
    dataset: Path, adapter: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import model.splits

    def forbidden(folder: object) -> None:
        raise AssertionError("the lockbox was read")

    monkeypatch.setattr(model.splits, "read_lockbox", forbidden)
    report = tmp_path / "dev.json"
    assert _eval(dataset, adapter, report) == 0
    result = EvalResult.from_json(report.read_text())
    assert result.split.startswith("dev of") and "lockbox_reads" not in read_card(adapter)
    fair = result.fair
    assert fair is not None
    assert set(fair["held_out_structure"]) == {"modifier_known", "other", "invented_word"}
    assert "structure" in fair["summary"]["levels"]["2"]
    assert fair["baseline_raw_novel"][0]["n"] == 1000
    assert fair["like_probe"][0]["conditions"] == 12
    assert fair["blend"][0]["pairs"] > 0 and 0 <= fair["summary"]["blend"]["both"]["mean"] <= 1


def test_each_lockbox_read_is_logged_in_the_card_first(
    dataset: Path, adapter: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "lockbox.json"
    extra = ("--lockbox", "--no-like-probes", "--blends", "0")
    assert _eval(dataset, adapter, report, *extra) == 0
    result = EvalResult.from_json(report.read_text())
    lockbox = [json.loads(line)["genre"] for line in (dataset / "lockbox.jsonl").open()]
    assert result.split.startswith("lockbox of") and result.valid_genres == len(lockbox)
    reads = read_card(adapter)["lockbox_reads"]
    assert len(reads) == 1 and reads[0]["command"].endswith("eval")
    assert reads[0]["options"]["lockbox"] is True and reads[0]["options"]["seeds"] == "1"
    assert "lockbox read #1" in capsys.readouterr().err
    assert _eval(dataset, adapter, report, *extra, "--update-card") == 0
    card = read_card(adapter)
    assert len(card["lockbox_reads"]) == 2 and card["eval_lockbox"]["split"].startswith("lockbox")
    # Without the held-out evaluation there is nothing to read the lockbox for: refused, unlogged.
    assert _eval(dataset, adapter, report, "--lockbox", "--no-baseline") == 2
    assert len(read_card(adapter)["lockbox_reads"]) == 2


def test_a_lockbox_that_cannot_be_logged_is_not_read(
    dataset: Path, adapter: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (adapter / "model_card.json").unlink()
    (adapter / "model_card.json").mkdir()  # not writable as a file
    assert _eval(dataset, adapter, tmp_path / "r.json", "--lockbox") == 2
    assert "cannot record the lockbox read" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_the_earlier_random_split_from_a_table_has_no_lockbox(
    adapter: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = tmp_path / "genres.csv"
    csv.write_text("genre,source,parent\n" + "\n".join(ROWS) + "\n")
    args = ["eval", "-n", "20", "--from-csv", str(csv), "--adapter", str(adapter), "--likes", "0"]
    assert entry([*args, "--split", "random", "--levels", "none", "--json"]) == 0
    assert "random validation split" in json.loads(capsys.readouterr().out)["split"]
    assert entry([*args, "--split", "random", "--lockbox", "--seeds", "1", "--levels", "2"]) == 2
    assert "no lockbox" in capsys.readouterr().err
