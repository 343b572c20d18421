"""Every Noise parsers on small hand-written pages and on the real saved pages."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from scraping.everynoise import detect_page, parse_genre_page, parse_list_page, parse_main_page
from scraping.records import ParseError, ParseReport

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "scraping"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def test_main_page_reads_position_colour_font_size_and_preview() -> None:
    report = parse_main_page(fixture("everynoise_main_small.html"))
    assert [r.name for r in report.records] == [
        "champeta",
        "drum and bass",
        "música popular brasileira",
        "post-rock",
    ]
    champeta = report.records[0]
    assert champeta.source == "everynoise"
    assert champeta.url == "https://everynoise.com/engenremap-champeta.html"
    assert champeta.extra == {
        "x": 1081,
        "y": 2827,
        "color": "#ca8205",
        "font_size": 103,
        "preview_url": "https://p.scdn.co/mp3-preview/aaa",
        "preview_track_id": "4SUH6sq37NhLPgon2TrT0a",
        "datasets": ["html2022-04"],
    }
    # No preview: the keys are absent rather than empty.
    assert "preview_url" not in report.records[1].extra
    assert report.records[2].extra["color"] == "#a49108"
    assert report.skipped == {}
    assert report.meta["as_of"] == "2022-04-29"


def test_browser_saved_main_page_with_quoted_attributes_and_absolute_links() -> None:
    report = parse_main_page(fixture("everynoise_main_browser_small.html"))
    assert [(r.name, r.extra["x"], r.extra["y"]) for r in report.records] == [
        ("champeta", 1080, 2821),
        ("indonesian shoegaze", 244, 5675),
    ]
    assert report.records[1].url == "https://everynoise.com/engenremap-indonesianshoegaze.html"
    assert report.records[0].extra["datasets"] == ["html2022-06"]


def test_list_page_reads_rank_playlist_and_colour() -> None:
    report = parse_list_page(fixture("everynoise1d_small.html"))
    assert [(r.name, r.extra["rank"]) for r in report.records] == [
        ("pop", 1),
        ("rap", 2),
        ("rock", 3),
        ("marci brijuzi", 4),
    ]
    assert report.records[0].extra["playlist"] == "spotify:playlist:6gS3HhOiI17QNojjPuPzqc"
    assert report.records[2].extra["color"] == "#ac7119"


def test_genre_page_similar_and_opposite_genres() -> None:
    report = parse_genre_page(fixture("everynoise_genre_small.html"))
    page, *others = report.records
    assert page.name == "breakbeat"
    assert page.url == "https://everynoise.com/engenremap-breakbeat.html"
    # The page's own genre, drawn among its neighbours, is not similar to itself.
    assert page.extra["similar"] == ["big beat", "nu skool breaks"]
    assert page.extra["opposite"] == ["broadway", "barbershop"]
    assert page.extra["playlist"] == "spotify:playlist:1yckyfEZtFkkq7UPXHbLwi"
    # Artists (id=itemN on a genre page) are not genres.
    assert "plumps djs" not in {r.name for r in others}
    assert [r.name for r in others] == ["big beat", "nu skool breaks", "broadway", "barbershop"]
    assert others[0].url == "https://everynoise.com/engenremap-bigbeat.html"
    assert report.meta["artists"] == 1


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("everynoise_main_small.html", "everynoise-main"),
        ("everynoise_main_browser_small.html", "everynoise-main"),
        ("everynoise1d_small.html", "everynoise-list"),
        ("everynoise_genre_small.html", "everynoise-genre"),
    ],
)
def test_detect_page(name: str, kind: str) -> None:
    assert detect_page(fixture(name)) == kind


@pytest.mark.parametrize(
    ("parser", "page", "needle"),
    [
        (parse_main_page, "everynoise_genre_small.html", "genre page, not the main map"),
        (parse_main_page, "<html><title>Hello</title><p>hi</p></html>", "not an Every Noise"),
        (parse_list_page, "everynoise_main_small.html", "main map, not the everynoise1d list"),
        (parse_genre_page, "everynoise_main_small.html", "not an Every Noise genre page"),
        (parse_genre_page, "<html><body>nothing</body></html>", "not an Every Noise"),
    ],
)
def test_wrong_kind_of_page_is_one_line_error(
    parser: Callable[[str], ParseReport], page: str, needle: str
) -> None:
    text = fixture(page) if page.endswith(".html") else page
    with pytest.raises(ParseError) as info:
        parser(text)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_main_page_cut_before_the_map_is_an_error() -> None:
    text = fixture("everynoise_main_small.html")
    with pytest.raises(ParseError, match="no genre entries"):
        parse_main_page(text[: text.index("<div id=item1")])


def test_main_page_cut_at_every_byte_gives_complete_entries_only() -> None:
    text = fixture("everynoise_main_small.html")
    full = [r.name for r in parse_main_page(text).records]
    starts = [i for i in range(len(text)) if text.startswith("<div id=item", i)]
    ends = [text.index("</div>", start) + len("</div>") for start in starts]
    for cut in range(starts[0], len(text), 5):
        complete = sum(end <= cut for end in ends)
        try:
            report = parse_main_page(text[:cut])
        except ParseError as exc:
            # Only when not one entry survived, and then in one line.
            assert complete == 0
            assert "\n" not in str(exc)
            continue
        names = [r.name for r in report.records]
        assert names == full[:complete]
        # The entry being cut is counted, never guessed at.
        assert report.skipped.get("truncated entry", 0) <= 1
        assert set(report.skipped) <= {"truncated entry"}


def test_list_page_cut_mid_row_counts_it() -> None:
    text = fixture("everynoise1d_small.html")
    cut = text.index("marci brijuzi") + 3
    report = parse_list_page(text[:cut])
    assert [r.name for r in report.records] == ["pop", "rap", "rock"]
    assert report.skipped == {"truncated entry": 1}


# --- the real saved pages -------------------------------------------------------------------


def test_real_main_page_2022_04(shared_data: Path) -> None:
    text = (shared_data / "html" / "everynoise_main_2022-04-29.html").read_text(encoding="utf-8")
    report = parse_main_page(text)
    assert len(report.records) == 5297  # the README's count of genre divs in this file
    assert report.skipped == {}
    assert report.meta["as_of"] == "2022-04-29"
    by_name = {r.name: r for r in report.records}
    assert by_name["champeta"].extra["x"] == 1081
    assert by_name["champeta"].extra["y"] == 2827
    assert all(r.url and "engenremap-" in r.url for r in report.records)
    assert all(isinstance(r.extra.get("font_size"), int) for r in report.records)


def test_real_browser_saved_main_page(shared_data: Path) -> None:
    path = shared_data / "html" / "everynoise_main_browser-saved_2022-06-01.html"
    report = parse_main_page(path.read_text(encoding="utf-8"))
    assert len(report.records) == 5303
    assert report.meta["as_of"] == "2022-06-01"


def test_real_genre_page(shared_data: Path) -> None:
    path = shared_data / "html" / "everynoise_genre_breakbeat_2022-06-01.html"
    report = parse_genre_page(path.read_text(encoding="utf-8"))
    page = report.records[0]
    assert page.name == "breakbeat"
    assert len(page.extra["similar"]) == 19  # 20 nearby divs, one is breakbeat itself
    assert len(page.extra["opposite"]) == 18
    assert report.meta["artists"] == 161


def test_real_main_page_cut_at_an_arbitrary_byte(shared_data: Path) -> None:
    data = (shared_data / "html" / "everynoise_main_2022-04-29.html").read_bytes()
    from scraping.files import decode_utf8

    text, _ = decode_utf8(data[:1_234_567])
    report = parse_main_page(text)
    assert 2000 < len(report.records) < 5297
    assert sum(report.skipped.values()) <= 1
