"""Server runs: a short fine-tune of an adapter on 👍/👎 votes (tiny model, no SmolLM2)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bot.cli import entry
from model.artifacts import ADAPTER_WEIGHTS, FINGERPRINT, MODEL_CARD
from model.dataset import Vote, read_votes, write_votes
from model.errors import DatasetError
from model.events import EventKind, StopReason, TrainEvent
from model.train.sft import TrainConfig, train
from model.train.votes import ServerRunConfig, server_run

UP = ["doom jazz", "sludge polka", "thrash zydeco", "black gaze"]
DOWN = ["sunny pop", "happy house", "soft yacht", "bubble gum"]


@pytest.fixture
def start_adapter(tiny_model_path: Path, tiny_dataset: Path, tmp_path: Path) -> Path:
    cfg = TrainConfig(
        base_model=str(tiny_model_path),
        epochs=1,
        batch_size=4,
        dtype="float32",
        device="cpu",
        max_steps=2,
        threads=1,
    )
    out = tmp_path / "start"
    train(tiny_dataset, out, cfg)
    return out


@pytest.fixture
def votes_file(tmp_path: Path) -> Path:
    votes = [Vote(n, "up") for n in UP] + [Vote(n, "down") for n in DOWN]
    return write_votes(votes, tmp_path / "votes.jsonl")


def _config(model: Path, **kw: Any) -> ServerRunConfig:
    values: dict[str, Any] = {
        "base_model": str(model),
        "dtype": "float32",
        "device": "cpu",
        "threads": 1,
        "max_steps": 12,
        "vote_batch": 8,
        "replay_batch": 4,
        "learning_rate": 1e-2,
        "warmup_steps": 1,
        "beta": 0.5,
        "tune_top_layers": 0,
        **kw,
    }
    return ServerRunConfig(**values)


@pytest.mark.parametrize("replay_batch", [4, 0])
def test_kto_raises_upvoted_and_lowers_downvoted_logps(
    replay_batch: int,
    tiny_model_path: Path,
    tiny_dataset: Path,
    start_adapter: Path,
    votes_file: Path,
    tmp_path: Path,
) -> None:
    out = tmp_path / "server"
    cfg = _config(tiny_model_path, replay_batch=replay_batch)
    server_run(tiny_dataset, votes_file, start_adapter, out, cfg)
    shift = json.loads((out / MODEL_CARD).read_text())["training"]["logp_shift"]
    # log π(y) − log π_ref(y), the reference being the starting adapter.
    assert shift["up"] > 0 > shift["down"]
    assert shift["up"] - shift["down"] > 1.0


def test_unlikelihood_separates_upvoted_from_downvoted(
    tiny_model_path: Path,
    tiny_dataset: Path,
    start_adapter: Path,
    votes_file: Path,
    tmp_path: Path,
) -> None:
    # Unlikelihood's push on a 👎 token is about p, small for any one genre, while the 👍
    # cross-entropy also raises what all names share (the end marker): 👎 genres may still
    # rise a little, only less than 👍 ones. KTO's sequence-level reward has no such leak.
    out = tmp_path / "server"
    cfg = _config(tiny_model_path, objective="unlikelihood", replay_batch=0)
    server_run(tiny_dataset, votes_file, start_adapter, out, cfg)
    shift = json.loads((out / MODEL_CARD).read_text())["training"]["logp_shift"]
    assert shift["up"] > 0 and shift["up"] - shift["down"] > 0.5


def test_server_run_respects_max_steps_and_publishes(
    tiny_model_path: Path,
    tiny_dataset: Path,
    start_adapter: Path,
    votes_file: Path,
    tmp_path: Path,
) -> None:
    events: list[TrainEvent] = []
    out = tmp_path / "server"
    result = server_run(
        tiny_dataset,
        votes_file,
        start_adapter,
        out,
        _config(tiny_model_path, max_steps=3),
        progress=events.append,
    )
    kinds = [e.event for e in events]
    assert kinds == [EventKind.START, *[EventKind.STEP] * 3, EventKind.DONE]
    assert result.steps == 3 and events[-1].stop_reason is StopReason.COMPLETED
    # The start and done events name the dataset the run trained from (the bot evaluates
    # both adapters on its validation split) and the adapter it wrote.
    assert events[0].dataset == events[-1].dataset == str(tiny_dataset)
    assert events[-1].output == str(out)
    for name in (ADAPTER_WEIGHTS, MODEL_CARD, FINGERPRINT):
        assert (out / name).is_file(), name
    assert not out.with_name("server.tmp").exists()
    card = json.loads((out / MODEL_CARD).read_text())
    assert card["from_adapter"]["path"] == str(start_adapter)
    assert (card["data"]["votes_up"], card["data"]["votes_down"]) == (4, 4)
    assert card["training"]["steps"] == 3


def test_only_the_top_layers_are_tuned(
    tiny_model_path: Path,
    tiny_dataset: Path,
    start_adapter: Path,
    votes_file: Path,
    tmp_path: Path,
) -> None:
    from safetensors.torch import load_file

    out = tmp_path / "server"
    cfg = _config(tiny_model_path, max_steps=3, tune_top_layers=1)  # the tiny model has 2
    server_run(tiny_dataset, votes_file, start_adapter, out, cfg)
    before = load_file(str(start_adapter / ADAPTER_WEIGHTS))
    after = load_file(str(out / ADAPTER_WEIGHTS))
    assert before.keys() == after.keys()
    changed = {k for k in before if not before[k].equal(after[k])}
    assert changed and all(".layers.1." in k for k in changed)


def test_server_run_stops_at_the_wall_clock_cap(
    tiny_model_path: Path,
    tiny_dataset: Path,
    start_adapter: Path,
    votes_file: Path,
    tmp_path: Path,
) -> None:
    events: list[TrainEvent] = []
    out = tmp_path / "server"
    # A cap shorter than loading the model: no step fits, and the run still ends cleanly.
    cfg = _config(tiny_model_path, max_steps=1000, max_minutes=0.001)
    result = server_run(tiny_dataset, votes_file, start_adapter, out, cfg, progress=events.append)
    assert result.steps == 0
    assert events[-1].event == EventKind.DONE
    assert events[-1].stop_reason is StopReason.TIME_LIMIT
    assert (out / ADAPTER_WEIGHTS).is_file()


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("not json", "not a vote line"),
        ('{"name": "doom jazz", "label": "sideways"}', '"label" must be'),
        ('{"label": "up"}', '"name" must be'),
        ('["doom jazz", "up"]', "JSON object"),
    ],
)
def test_bad_votes_line_is_named(tmp_path: Path, line: str, problem: str) -> None:
    path = tmp_path / "votes.jsonl"
    path.write_text('{"name": "doom jazz", "label": "up", "like": null}\n' + line + "\n")
    with pytest.raises(DatasetError, match=f"votes.jsonl:2: .*{problem}"):
        read_votes(path)


def test_votes_file_round_trip(tmp_path: Path) -> None:
    votes = [Vote("doom jazz", "up"), Vote("sunny pop", "down", like="pop")]
    assert read_votes(write_votes(votes, tmp_path / "v.jsonl")) == votes


def test_train_takes_no_votes_and_server_run_needs_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    votes = tmp_path / "votes.jsonl"
    votes.write_text('{"name": "doom jazz", "label": "up"}\n')
    assert entry(["train", "--votes", str(votes)]) == 2
    assert "No such option '--votes'" in capsys.readouterr().err
    assert entry(["server-run", "--output", str(tmp_path / "out")]) == 2
    assert "Missing option '--votes'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_server_run_with_bad_votes_is_one_line_exit_2(
    tiny_dataset: Path,
    start_adapter: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    votes = tmp_path / "votes.jsonl"
    votes.write_text('{"name": "doom jazz", "label": "maybe"}\n')
    code = entry(
        [
            "server-run",
            "--dataset",
            str(tiny_dataset),
            "--from-adapter",
            str(start_adapter),
            "--votes",
            str(votes),
            "--output",
            str(tmp_path / "out"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "votes.jsonl:1" in err and "Traceback" not in err


def use_tiny_model(monkeypatch: pytest.MonkeyPatch, model: Path) -> None:
    """The CLI's [model] settings for the tiny test model, through the environment."""
    monkeypatch.setenv("MICROGENRE_MODEL_BASE_MODEL", str(model))
    monkeypatch.setenv("MICROGENRE_MODEL_DTYPE", "float32")
    monkeypatch.setenv("MICROGENRE_MODEL_THREADS", "1")


def test_cli_server_run_progress_json(
    tiny_model_path: Path,
    tiny_dataset: Path,
    start_adapter: Path,
    votes_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    use_tiny_model(monkeypatch, tiny_model_path)
    out = tmp_path / "out"
    argv = ["server-run", "--dataset", str(tiny_dataset), "--from-adapter", str(start_adapter)]
    argv += ["--votes", str(votes_file), "--max-steps", "2", "--replay", "8"]
    code = entry([*argv, "--max-minutes", "2", "--output", str(out), "--progress-json"])
    assert code == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["event"] for e in events] == ["start", "step", "step", "done"]
    assert events[-1]["stop_reason"] == "completed" and events[-1]["output"] == str(out)
    card = json.loads((out / MODEL_CARD).read_text())
    assert card["hyperparameters"]["replay"] == 8 and card["hyperparameters"]["max_steps"] == 2


def _fresh_store_server_run(
    tiny_model_path: Path,
    start_adapter: Path,
    votes_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *options: str,
) -> tuple[Path, list[dict[str, Any]]]:
    """`server-run` with ``options`` on a store that never imported real genres: the output
    folder and the --progress-json events. The tiny model writes noise, so the replay is
    sampled through the same pipeline from a scripted sampler that writes genre-like names."""
    from tests.bot.scripted_sampler import ScriptedSampler

    data = tmp_path / "data"
    monkeypatch.setenv("MICROGENRE_PATHS_DATA_DIR", str(data))
    use_tiny_model(monkeypatch, tiny_model_path)
    assert entry(["db", "upgrade"]) == 0
    capsys.readouterr()
    monkeypatch.setattr("bot.cli.train.load_sampler", lambda config, adapter: ScriptedSampler())
    out = data / "adapters" / "run-0001"
    argv = ["server-run", "--from-adapter", str(start_adapter), "--votes", str(votes_file)]
    code = entry([*argv, *options, "--output", str(out), "--progress-json"])
    assert code == 0, capsys.readouterr().err
    return out, [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_a_fresh_store_server_run_replays_the_adapters_own_genres(
    tiny_model_path: Path,
    start_adapter: Path,
    votes_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A deployment that never imported real genres (`db upgrade`, no scrape) can still run a
    server run with the defaults: the replay and the evaluation split are genres the starting
    adapter writes itself, and the new adapter keeps the starting adapter's fingerprint of the
    real genres."""
    from model.artifacts import FINGERPRINT
    from model.train.replay import PROVENANCE_FILE, SELF_REPLAY_SOURCE

    out, events = _fresh_store_server_run(
        tiny_model_path,
        start_adapter,
        votes_file,
        tmp_path,
        monkeypatch,
        capsys,
        "--max-steps",
        "2",
    )
    assert events[-1]["event"] == "done"
    dataset = Path(events[-1]["dataset"])
    provenance = json.loads((dataset / PROVENANCE_FILE).read_text())
    # The scripted names start with 9 words, each capped at 5 per call, as `/genre new` caps.
    assert provenance["source"] == SELF_REPLAY_SOURCE and provenance["genres"] == 45
    train_names = [json.loads(line)["genre"] for line in (dataset / "train.jsonl").open()]
    assert len(train_names) >= 35 and all(len(n.split()) == 3 for n in train_names)
    assert (out / FINGERPRINT).read_bytes() == (start_adapter / FINGERPRINT).read_bytes()
    card = json.loads((out / MODEL_CARD).read_text())
    assert card["replay_source"] == SELF_REPLAY_SOURCE


def test_a_self_replay_writes_no_more_genres_than_replay_asks(
    tiny_model_path: Path,
    start_adapter: Path,
    votes_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`--replay N` sizes a self-replay too: the starting adapter writes N genres, not the
    default's 600 (a short run need not wait for genres it will not replay)."""
    from model.train.replay import PROVENANCE_FILE

    _, events = _fresh_store_server_run(
        tiny_model_path,
        start_adapter,
        votes_file,
        tmp_path,
        monkeypatch,
        capsys,
        "--max-steps",
        "1",
        "--replay",
        "20",
    )
    provenance = json.loads((Path(events[-1]["dataset"]) / PROVENANCE_FILE).read_text())
    assert provenance["genres"] == 20
