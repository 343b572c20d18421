"""Importing real genres into the store, exporting them, and `microgenre scrape`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.cli import entry
from bot.store.engine import SessionMaker
from bot.store.genres import export_genres, import_records, known_genre_keys
from bot.store.models import ORIGIN_GENERATED, Genre, GenreSource
from scraping.records import GenreRecord
from tests.bot.test_migrations import postgres_url  # noqa: F401 (fixture)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "scraping"


def rec(name: str, source: str = "everynoise", url: str | None = None, **extra: Any) -> GenreRecord:
    return GenreRecord.create(name, source, url, extra)


async def counts(sessions: SessionMaker) -> tuple[int, int]:
    async with sessions.begin() as session:
        genres = await session.scalar(select(func.count()).select_from(Genre))
        sources = await session.scalar(select(func.count()).select_from(GenreSource))
    return int(genres or 0), int(sources or 0)


async def test_import_merges_by_key_with_provenance(sessions: SessionMaker) -> None:
    result = await import_records(
        sessions,
        [
            rec("Post-Rock", x=1, datasets=["a"]),
            rec("post rock", "rym", "https://rateyourmusic.com/genres/"),
            rec("post rock", datasets=["b"]),  # same source again: merged, not a second row
            rec("Shoegaze", "wikipedia"),
            rec("   ", "wikipedia"),
        ],
    )
    assert (result.added, result.updated, result.skipped) == (2, 0, 1)
    assert result.reasons == {"empty name": 1}
    assert await counts(sessions) == (2, 3)
    exported = {g["key"]: g for g in await export_genres(sessions)}
    assert set(exported) == {"post rock", "shoegaze"}
    post = exported["post rock"]
    assert post["display_name"] == "post-rock"
    assert [s["source"] for s in post["sources"]] == ["everynoise", "rym"]
    assert post["sources"][0]["extra"] == {"x": 1, "datasets": ["a", "b"]}
    assert post["sources"][1]["url"] == "https://rateyourmusic.com/genres/"
    assert await known_genre_keys(sessions) == {"post rock", "shoegaze"}


async def test_second_identical_import_changes_nothing(sessions: SessionMaker) -> None:
    records = [rec("dub techno", x=3, parents=["techno"]), rec("dub techno", "rym")]
    first = await import_records(sessions, records)
    second = await import_records(sessions, records)
    assert (first.added, first.updated) == (1, 0)
    assert (second.added, second.updated, second.unchanged) == (0, 0, 2)
    assert await counts(sessions) == (1, 2)


async def test_changed_extra_or_url_or_new_source_is_an_update(sessions: SessionMaker) -> None:
    await import_records(sessions, [rec("vaporwave", x=1, datasets=["a"])])
    result = await import_records(sessions, [rec("vaporwave", x=2, datasets=["b"])])
    assert (result.added, result.updated) == (0, 1)
    result = await import_records(sessions, [rec("vaporwave", url="https://e.x/v")])
    assert (result.added, result.updated) == (0, 1)
    result = await import_records(sessions, [rec("Vaporwave", "musicbrainz", mbid="m")])
    assert (result.added, result.updated) == (0, 1)
    [genre] = await export_genres(sessions)
    everynoise = genre["sources"][0]
    assert everynoise["extra"] == {"x": 2, "datasets": ["a", "b"]}
    assert everynoise["url"] == "https://e.x/v"
    assert [s["source"] for s in genre["sources"]] == ["everynoise", "musicbrainz"]


async def test_generated_genre_that_turns_out_real_becomes_training(
    sessions: SessionMaker,
) -> None:
    async with sessions.begin() as session:
        session.add(Genre(name="glitch hop", display_name="glitch-hop", origin=ORIGIN_GENERATED))
    result = await import_records(sessions, [rec("Glitch-Hop")])
    assert (result.added, result.updated) == (0, 1)
    assert [g["key"] for g in await export_genres(sessions)] == ["glitch hop"]
    assert await export_genres(sessions, origin=ORIGIN_GENERATED) == []


async def test_import_is_all_or_nothing(
    sessions: SessionMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.store import genres as module

    real = module._jsonable
    calls = {"n": 0}

    def failing(extra: dict[str, Any]) -> dict[str, Any]:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("disk full")
        return real(extra)

    monkeypatch.setattr(module, "_jsonable", failing)
    with pytest.raises(RuntimeError):
        await import_records(sessions, [rec(f"genre {i}") for i in range(5)])
    assert await counts(sessions) == (0, 0)


async def test_large_import_uses_chunks(sessions: SessionMaker) -> None:
    # More keys than one IN (...) chunk, on both the insert and the re-import path.
    records = [rec(f"scene {i}", x=i) for i in range(1234)]
    assert (await import_records(sessions, records)).added == 1234
    again = await import_records(sessions, records)
    assert (again.added, again.updated, again.unchanged) == (0, 0, 1234)


# --- the CLI --------------------------------------------------------------------------------


@pytest.fixture
def db(monkeypatch: pytest.MonkeyPatch, sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> str:
    monkeypatch.setenv("MICROGENRE_DATABASE_URL", sqlite_url)
    assert entry(["db", "upgrade"]) == 0
    capsys.readouterr()
    return sqlite_url


def scrape_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert entry(["scrape", *args, "--json"]) == 0
    result: dict[str, Any] = json.loads(capsys.readouterr().out)
    return result


def training_genres(capsys: pytest.CaptureFixture[str]) -> int:
    assert entry(["stats", "--json"]) == 0
    return int(json.loads(capsys.readouterr().out)["training_genres"])


def test_cli_scrape_saved_page_twice(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    page = str(FIXTURES / "everynoise_main_small.html")
    first = scrape_json(capsys, "--source", "everynoise", "--from", page)
    assert (first["added"], first["updated"], first["skipped"]) == (4, 0, 0)
    assert training_genres(capsys) == 4
    second = scrape_json(capsys, "--source", "everynoise", "--from", page)
    assert (second["added"], second["updated"], second["unchanged"]) == (0, 0, 4)


def test_cli_scrape_folder_all_sources(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    result = scrape_json(capsys, "--source", "all", "--from", str(FIXTURES / "data"))
    kinds = {item.get("kind") for item in result["inputs"]}
    assert {"enao-csv", "rym-json", "discogs-json", "musicbrainz-csv", "genres-csv"} <= kinds
    assert result["added"] == training_genres(capsys) > 20
    # The table (curated, imported last) and the raw files agree: a re-run changes nothing.
    again = scrape_json(capsys, "--source", "all", "--from", str(FIXTURES / "data"))
    assert (again["added"], again["updated"]) == (0, 0)


def test_cli_scrape_folder_one_source(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    result = scrape_json(capsys, "--source", "rym", "--from", str(FIXTURES / "data"))
    # rym/tree.json only (genres.csv has no rym rows here).
    assert result["added"] == 5
    assert [i["input"].rsplit("/", 1)[-1] for i in result["inputs"]] == ["tree.json", "genres.csv"]


def test_cli_text_report(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    page = str(FIXTURES / "everynoise1d_small.html")
    assert entry(["scrape", "--source", "everynoise", "--from", page]) == 0
    out = capsys.readouterr().out
    assert "everynoise-list, 4 records" in out
    assert "added 4, updated 0, unchanged 0, skipped 0" in out


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"", "empty file"),
        ("caf\u00e9 music\n".encode("latin-1"), "not UTF-8"),
        (b"<html><title>Weather</title></html>", "not an Every Noise"),
        (b'{"genres": ["rock", ', "invalid JSON"),
    ],
)
def test_cli_bad_file_one_line_store_unchanged(
    db: str, capsys: pytest.CaptureFixture[str], tmp_path: Path, content: bytes, needle: str
) -> None:
    scrape_json(capsys, "--from", str(FIXTURES / "everynoise_main_small.html"))
    suffix = ".html" if content.startswith(b"<") else ".json"
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes(content)
    assert entry(["scrape", "--source", "everynoise", "--from", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err and err.startswith("Error: ")
    assert training_genres(capsys) == 4


def test_cli_wrong_source_and_missing_path(
    db: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rym = str(FIXTURES / "data" / "rym" / "tree.json")
    assert entry(["scrape", "--source", "everynoise", "--from", rym]) == 2
    assert "lists rym genres, not everynoise" in capsys.readouterr().err
    assert entry(["scrape", "--from", str(tmp_path / "nope")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert training_genres(capsys) == 0


def test_cli_truncated_page_imports_what_it_can(
    db: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = (FIXTURES / "everynoise_main_small.html").read_bytes()
    cut = tmp_path / "cut.html"
    cut.write_bytes(data[: data.index(b"post-rock<a") - 40])
    result = scrape_json(capsys, "--source", "everynoise", "--from", str(cut))
    assert result["added"] == 3
    assert result["skipped_reasons"] == {"truncated entry": 1}


def test_cli_folder_passes_over_unreadable_files(
    db: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "good.txt").write_text("rock\njazz\n", encoding="utf-8")
    (folder / "bad.txt").write_bytes("caf\u00e9 music\n".encode("latin-1"))
    result = scrape_json(capsys, "--from", str(folder))
    assert result["added"] == 2
    errors = [i for i in result["inputs"] if "error" in i]
    assert len(errors) == 1 and "not UTF-8" in errors[0]["error"]


def test_cli_live_source_without_scraper(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert entry(["scrape", "--source", "rym"]) == 2
    assert "no live scraper" in capsys.readouterr().err


def test_cli_unmigrated_store_fails_before_reading(
    monkeypatch: pytest.MonkeyPatch, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MICROGENRE_DATABASE_URL", sqlite_url)
    assert entry(["scrape", "--from", str(FIXTURES / "everynoise_main_small.html")]) == 3
    assert "microgenre db upgrade" in capsys.readouterr().err


# --- acceptance on the real data ------------------------------------------------------------


def test_real_main_page_and_all_shared_data(
    db: str, capsys: pytest.CaptureFixture[str], shared_data: Path
) -> None:
    page = str(shared_data / "html" / "everynoise_main_2022-04-29.html")
    first = scrape_json(capsys, "--source", "everynoise", "--from", page)
    assert first["added"] == 5297 and training_genres(capsys) >= 5000
    again = scrape_json(capsys, "--source", "everynoise", "--from", page)
    assert (again["added"], again["updated"]) == (0, 0)
    everything = scrape_json(capsys, "--source", "all", "--from", str(shared_data))
    assert everything["skipped"] == 0
    total = training_genres(capsys)
    assert total > 8000
    rerun = scrape_json(capsys, "--source", "all", "--from", str(shared_data))
    assert (rerun["added"], rerun["updated"]) == (0, 0)


# --- PostgreSQL (skips where no server is configured, like the migration tests) -------------


@pytest.mark.postgres
async def test_import_on_postgres(postgres_url: str) -> None:  # noqa: F811 (the fixture)
    import asyncio

    from bot.store import schema
    from bot.store.engine import create_engine, create_sessionmaker

    await asyncio.to_thread(schema.upgrade, postgres_url, "head")
    engine = create_engine(postgres_url)
    try:
        sessions = create_sessionmaker(engine)
        records = [rec(f"scene {i}", x=i, parents=["p"]) for i in range(1234)]
        records += [rec("Scene 7", "rym"), rec("música", "wikipedia", origin_geo=["Brasil"])]
        first = await import_records(sessions, records)
        assert (first.added, first.updated) == (1235, 0)
        again = await import_records(sessions, records)
        assert (again.added, again.updated, again.unchanged) == (0, 0, 1236)
        changed = await import_records(sessions, [rec("scene 1", x=-1)])
        assert (changed.added, changed.updated) == (0, 1)
        exported = {g["key"]: g for g in await export_genres(sessions)}
        assert exported["musica"]["display_name"] == "música"
        assert [s["source"] for s in exported["scene 7"]["sources"]] == ["everynoise", "rym"]
        assert exported["scene 1"]["sources"][0]["extra"] == {"x": -1, "parents": ["p"]}
    finally:
        await engine.dispose()
