"""File importers: every format, detection, lenient reading and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from scraping.files import data_files, decode_utf8, parse_document, read_document
from scraping.musicbrainz import parse_genre_list
from scraping.records import ParseError, merge_records

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "scraping"
DATA = FIXTURES / "data"


def names(path: Path) -> list[str]:
    return [r.name for r in read_document(path).records]


@pytest.mark.parametrize(
    ("relative", "kind", "source", "expected"),
    [
        ("everynoise/enao.csv", "enao-csv", "everynoise", ["rock", "post-rock"]),
        ("everynoise/list.csv", "list-csv", "everynoise", ["pop", "rock"]),
        (
            "everynoise/geeoon.json",
            "geeoon-json",
            "everynoise",
            ["21st century classical", "post rock", "rock"],
        ),
        ("everynoise/watch.csv", "enaowatch-csv", "everynoise", ["rock", "piano blues"]),
        (
            "everynoise/parents.json",
            "parent-map-json",
            "everynoise",
            ["pop", "dance pop", "post rock", "rock"],
        ),
        (
            "wikipedia/genres.txt",
            "beets-txt",
            "wikipedia",
            ["2 tone", "2-step", "acid jazz", "rock"],
        ),
        (
            "wikipedia/tree.yaml",
            "beets-tree-yaml",
            "wikipedia",
            [
                "african",
                "afrobeat",
                "highlife",
                "rock",
                "alternative rock",
                "post-rock",
                "punk rock",
            ],
        ),
        (
            "wikipedia/list.json",
            "wikipedia-list-json",
            "wikipedia",
            ["2-step garage", "acid house"],
        ),
        (
            "wikipedia/infobox.json",
            "wikipedia-infobox-json",
            "wikipedia",
            ["2 step garage", "breakstep", "grime", "2-step"],
        ),
        ("musicbrainz/mb.csv", "musicbrainz-csv", "musicbrainz", ["2 tone", "2-step"]),
        (
            "discogs/discogs.json",
            "discogs-json",
            "discogs",
            ["blues", "boogie woogie", "electronic", "post rock", "rock", "post rock"],
        ),
        (
            "rym/tree.json",
            "rym-json",
            "rym",
            ["ambient", "space ambient", "rock", "post-rock", "space rock", "space ambient"],
        ),
        ("genres.csv", "genres-csv", None, ["post-rock", "afrobeat", "2 tone"]),
    ],
)
def test_each_format(relative: str, kind: str, source: str | None, expected: list[str]) -> None:
    report = read_document(DATA / relative)
    assert report.meta["kind"] == kind
    assert report.meta["source"] == source
    assert [r.name for r in report.records] == expected
    assert report.skipped == {}


def test_extras_of_the_formats() -> None:
    enao = read_document(DATA / "everynoise/enao.csv").records[0]
    assert enao.extra["x"] == 563 and enao.extra["y"] == 11552
    assert enao.extra["color"] == "#ac7119" and enao.extra["font_size"] == 141
    listed = read_document(DATA / "everynoise/list.csv").records[1]
    assert listed.extra["rank"] == 2
    assert listed.extra["playlist"] == "spotify:playlist:7dowgSWOmvdpwNkGFMUs6e"
    watch = read_document(DATA / "everynoise/watch.csv").records[0]
    # The 2021 map counts y from the bottom: kept apart from the top-down y.
    assert "y" not in watch.extra and watch.extra["y_from_bottom_2021"] == 1200
    parents = {
        r.name: r.extra["parents"] for r in read_document(DATA / "everynoise/parents.json").records
    }
    assert parents == {"pop": [], "dance pop": ["pop"], "post rock": ["rock"], "rock": []}
    tree = {r.name: r.extra["parents"] for r in read_document(DATA / "wikipedia/tree.yaml").records}
    assert tree["post-rock"] == ["alternative rock"] and tree["alternative rock"] == ["rock"]
    infobox = {r.name: r.extra for r in read_document(DATA / "wikipedia/infobox.json").records}
    assert infobox["2 step garage"]["origin_years"] == "1993-1996"
    assert infobox["2 step garage"]["origin_geo"] == ["London", "England"]
    assert infobox["grime"]["derived_from"] == ["2 step garage"]
    assert infobox["2-step"]["alias_of"] == ["2 step garage"]
    mb = read_document(DATA / "musicbrainz/mb.csv").records[1]
    assert mb.extra["mbid"] == "db325bd7-ae64-40bd-966a-a3af3cef8bb9"
    assert mb.extra["disambiguation"] == "UK garage style"
    assert mb.url == "https://musicbrainz.org/genre/db325bd7-ae64-40bd-966a-a3af3cef8bb9"
    rym = merge_records(read_document(DATA / "rym/tree.json").records)
    space = next(r for r in rym if r.name == "space ambient")
    assert space.extra["parents"] == ["ambient", "space rock"]  # a genre under two parents
    discogs = merge_records(read_document(DATA / "discogs/discogs.json").records)
    assert next(r for r in discogs if r.name == "post rock").extra["parents"] == [
        "electronic",
        "rock",
    ]
    table = {r.name: r for r in read_document(DATA / "genres.csv").records}
    assert table["post-rock"].extra["rank"] == 250
    assert table["post-rock"].extra["datasets"] == ["enao2023", "list2023"]
    assert table["afrobeat"].source == "wikipedia"
    assert table["afrobeat"].extra["origin_geo"] == ["Nigeria", "Ghana"]
    assert table["2 tone"].extra["mbid"] == "18797864-41b0-4602-8241-adbee761774c"


def test_musicbrainz_api_page() -> None:
    report = parse_genre_list((FIXTURES / "musicbrainz_page0.json").read_text())
    assert [r.name for r in report.records] == ["2 tone", "2-step"]
    assert report.meta == {"kind": "musicbrainz-api", "genre-count": 3, "genre-offset": 0}
    assert report.records[1].extra["disambiguation"] == "UK garage style"
    # The same document is recognised as a file too.
    assert read_document(FIXTURES / "musicbrainz_page0.json").meta["kind"] == "musicbrainz-api"


def test_data_files_skips_non_data_files() -> None:
    found = [p.relative_to(DATA).as_posix() for p in data_files(DATA)]
    assert "README.md" not in found
    assert "genres.csv" in found and "rym/tree.json" in found
    assert found == sorted(found)


# --- damaged and wrong input -------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "content", "needle"),
    [
        ("empty.csv", b"", "empty file"),
        ("blank.json", b"  \n\n", "empty file"),
        ("latin1.txt", "caf\u00e9 music\n".encode("latin-1"), "not UTF-8"),
        ("cut.json", b'{"genres": ["rock", "po', "invalid JSON"),
        ("other.json", b'{"weather": 3}', "unknown layout"),
        ("other.csv", b"a,b,c\n1,2,3\n", "unknown columns"),
        ("page.html", b"<html><title>News</title><body>hello</body></html>", "not an Every Noise"),
        ("notes.docx", b"rock\n", "unknown file type"),
        ("bad.yaml", b"- a:\n  - b\n - c: [\n", "invalid YAML"),
    ],
)
def test_bad_files_are_one_line_errors(
    tmp_path: Path, filename: str, content: bytes, needle: str
) -> None:
    path = tmp_path / filename
    path.write_bytes(content)
    with pytest.raises(ParseError) as info:
        read_document(path)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_csv_cut_mid_row_keeps_complete_rows(tmp_path: Path) -> None:
    text = (DATA / "everynoise/enao.csv").read_text(encoding="utf-8")
    path = tmp_path / "enao.csv"
    path.write_text(text[: text.index("post-rock") + 30], encoding="utf-8")
    report = read_document(path)
    assert [r.name for r in report.records] == ["rock"]
    assert sum(report.skipped.values()) == 1


def test_csv_cut_inside_a_quoted_field(tmp_path: Path) -> None:
    text = (DATA / "everynoise/enao.csv").read_text(encoding="utf-8")
    path = tmp_path / "enao.csv"
    path.write_text(text[: text.index("Mogwai") + 3], encoding="utf-8")
    report = read_document(path)
    assert [r.name for r in report.records] == ["rock"]
    assert sum(report.skipped.values()) == 1


def test_file_cut_inside_a_utf8_character(tmp_path: Path) -> None:
    data = "genre_name,color,top_pixel,left_pixel,font_size\nmúsica,#aaaaaa,1,2,100\nmú".encode()
    path = tmp_path / "enao.csv"
    path.write_bytes(data[:-1])  # cut inside "ú"
    report = read_document(path)
    assert [r.name for r in report.records] == ["música"]
    assert report.skipped["character cut at the end of the file"] == 1
    assert report.skipped["incomplete row"] == 1


def test_decode_utf8_strips_bom() -> None:
    assert decode_utf8(b"\xef\xbb\xbfrock\n") == ("rock\n", False)


def test_html_file_dispatch(tmp_path: Path) -> None:
    report = parse_document("x.html", (FIXTURES / "everynoise1d_small.html").read_text())
    assert report.meta["kind"] == "everynoise-list"
    assert report.meta["source"] == "everynoise"


# --- the real shared data ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("relative", "kind", "count"),
    [
        ("everynoise/wildanazz_enao-genres.csv", "enao-csv", 5653),
        ("everynoise/musicmosaic_everynoise1d_genres.csv", "list-csv", 5653),
        ("everynoise/geeoon_output.json", "geeoon-json", 5327),
        ("everynoise/everynoisewatch_genre_attrs.csv", "enaowatch-csv", 4914),
        ("everynoise/reteps_parent_map.json", "parent-map-json", 3876),
        ("wikipedia/beets_lastgenre_genres.txt", "beets-txt", 1488),
        ("wikipedia/beets_lastgenre_genres-tree.yaml", "beets-tree-yaml", 743),
        ("wikipedia/ribbas_list.json", "wikipedia-list-json", 740),
        ("musicbrainz/musicbrainz_genres.csv", "musicbrainz-csv", 806),
        ("rym/rym-genre-tree.json", "rym-json", 5382),
        ("genres.csv", "genres-csv", 11364),
    ],
)
def test_real_files(shared_data: Path, relative: str, kind: str, count: int) -> None:
    report = read_document(shared_data / relative)
    assert report.meta["kind"] == kind
    assert len(report.records) == count  # the row counts the data README states
    assert report.skipped == {}


def test_real_discogs_and_rym_distinct_counts(shared_data: Path) -> None:
    discogs = merge_records(
        read_document(shared_data / "discogs/discogs-effnet-bs64-1.json").records
    )
    assert len(discogs) == 365  # 370 styles + 15 top-level genres, merged (README)
    rym = merge_records(read_document(shared_data / "rym/rym-genre-tree.json").records)
    assert len(rym) == 2427


def test_prose_text_file_is_not_a_genre_list(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text(
        "Remember to ask the admins about the retraining schedule next week.\n"
        "The bot should post new genres every evening, not every hour.\n"
        "todo: fix the config = values\n",
        encoding="utf-8",
    )
    with pytest.raises(ParseError, match="not a genre list"):
        read_document(path)


def test_odd_line_in_a_genre_list_is_skipped(tmp_path: Path) -> None:
    lines = [f"genre {i}" for i in range(20)]
    lines.append("this line is clearly a sentence that somebody pasted into the list")
    path = tmp_path / "genres.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = read_document(path)
    assert len(report.records) == 20
    assert report.skipped == {"not a genre name": 1}


def test_oversized_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from scraping import files

    monkeypatch.setattr(files, "MAX_FILE_BYTES", 10)
    path = tmp_path / "genres.txt"
    path.write_text("rock\njazz\nblues\n", encoding="utf-8")
    with pytest.raises(ParseError, match="larger than"):
        read_document(path)
