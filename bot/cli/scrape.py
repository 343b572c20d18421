"""`microgenre scrape --source everynoise|musicbrainz|wikipedia|rym|discogs|all [--from PATH]`.

Without ``--from`` the pages are fetched live (Every Noise main map and list page, the
MusicBrainz genre API), politely and through the on-disk cache. With ``--from`` a saved page,
a data file or a folder of them (recursive) is imported. Either way all records go into the
store in one transaction and the command reports added / updated / unchanged / skipped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from bot.cli.common import echo_json, open_store, state
from bot.config import Config
from bot.errors import InputError, MicrogenreError
from scraping.files import SOURCES, data_files, kind_rank, read_document
from scraping.records import GenreRecord, ParseError, ParseReport

if TYPE_CHECKING:
    from scraping.fetch import FetchSettings

log = logging.getLogger(__name__)

LIVE_SOURCES = ("everynoise", "musicbrainz")


@dataclass
class ScrapeResult:
    """What one `scrape` run read, per input, before the store import."""

    records: list[GenreRecord] = field(default_factory=list)
    inputs: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, report: ParseReport, wanted: str) -> None:
        records = [r for r in report.records if wanted == "all" or r.source == wanted]
        self.records.extend(records)
        for reason, n in report.skipped.items():
            self.skipped[reason] = self.skipped.get(reason, 0) + n
        self.inputs.append(
            {
                "input": name,
                "kind": report.meta.get("kind"),
                "records": len(records),
                "skipped": dict(report.skipped),
            }
        )


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


async def _read(path: Path) -> ParseReport:
    try:
        return await asyncio.to_thread(read_document, path)
    except ParseError as exc:
        raise InputError(f"{_display(path)}: {exc}") from None


def _plan(path: Path) -> list[Path] | None:
    """None for a single file, else the data files of a folder (blocking)."""
    if path.is_file():
        return None
    if not path.is_dir():
        raise InputError(f"{_display(path)}: no such file or folder")
    return data_files(path)


async def collect_from_path(path: Path, source: str) -> ScrapeResult:
    """Parse a file, or every data file under a folder, keeping records of ``source``.

    A named file of another source is an error; in a folder, files of other sources, files
    of an unknown kind and unreadable files are passed over (and listed in the report).
    """
    result = ScrapeResult()
    files = await asyncio.to_thread(_plan, path)
    if files is None:
        report = await _read(path)
        kind_source = report.meta.get("source")
        if source != "all" and kind_source not in (None, source):
            raise InputError(f"{_display(path)}: lists {kind_source} genres, not {source}")
        result.add(_display(path), report, source)
        if not result.records:
            raise InputError(f"{_display(path)}: no {source} genres found")
        return result
    reports: list[tuple[int, str, ParseReport]] = []
    for file in files:
        try:
            report = await _read(file)
        except InputError as exc:
            result.inputs.append({"input": _display(file), "error": str(exc).split(": ", 1)[-1]})
            continue
        kind_source = report.meta.get("source")
        if source != "all" and kind_source not in (None, source):
            continue
        reports.append((kind_rank(str(report.meta.get("kind"))), _display(file), report))
    for _, name, report in sorted(reports, key=lambda item: (item[0], item[1])):
        result.add(name, report, source)
    if not result.records:
        raise InputError(f"{_display(path)}: no {source} genre files found")
    return result


def fetch_settings(config: Config) -> FetchSettings:
    """The fetch layer's settings from the `[scraping]` section."""
    from scraping.fetch import FetchSettings

    cfg = config.scraping
    cache = config.resolve_path(cfg.cache_dir) if cfg.cache_dir else config.data_dir / "cache/http"
    return FetchSettings(
        user_agent=cfg.user_agent,
        requests_per_second=cfg.requests_per_second,
        timeout_s=cfg.timeout_s,
        max_retries=cfg.max_retries,
        max_backoff_s=cfg.max_backoff_s,
        cache_dir=cache,
        progress=cfg.progress,
    )


async def collect_live(
    config: Config, source: str, *, refresh: bool = False, genre_pages: int = 0
) -> ScrapeResult:
    from scraping.fetch import Fetcher, FetchError
    from scraping.live import scrape_everynoise, scrape_musicbrainz

    sources = LIVE_SOURCES if source == "all" else (source,)
    if any(s not in LIVE_SOURCES for s in sources):
        raise InputError(
            f"{source} has no live scraper (use --from with a saved file); "
            f"live sources: {', '.join(LIVE_SOURCES)}"
        )
    result = ScrapeResult()
    settings = dataclasses.replace(fetch_settings(config), refresh=refresh)
    async with Fetcher.open(settings) as fetcher:
        for name in sources:
            try:
                if name == "everynoise":
                    reports = await scrape_everynoise(fetcher, genre_pages)
                else:
                    reports = await scrape_musicbrainz(fetcher)
            except FetchError as exc:
                raise MicrogenreError(f"cannot scrape {name}: {exc}") from None
            except ParseError as exc:
                raise MicrogenreError(f"cannot scrape {name}: unexpected page: {exc}") from None
            for label, report in reports:
                result.add(label, report, name)
        log.info("fetch stats: %s", fetcher.stats)
    if not result.records:
        raise InputError(f"no {source} genres could be scraped")
    return result


async def _run(
    config: Config,
    source: str,
    from_path: str | None,
    refresh: bool = False,
    genre_pages: int = 0,
) -> dict[str, Any]:
    from bot.store.genres import import_records

    started = time.perf_counter()
    # Check the store before fetching anything: a missing schema fails fast, in one line.
    async with open_store(config) as sessions:
        if from_path is not None:
            result = await collect_from_path(Path(from_path), source)
        else:
            result = await collect_live(config, source, refresh=refresh, genre_pages=genre_pages)
        counts = await import_records(sessions, result.records)
    data = counts.to_dict()
    for reason, n in result.skipped.items():
        data["skipped_reasons"][reason] = data["skipped_reasons"].get(reason, 0) + n
    data["skipped"] = sum(data["skipped_reasons"].values())
    data["records"] = len(result.records)
    data["inputs"] = result.inputs
    data["seconds"] = round(time.perf_counter() - started, 2)
    return data


@click.command()
@click.option(
    "--source",
    type=click.Choice([*SOURCES, "all"]),
    default="all",
    show_default=True,
    help="Which source's genres to import.",
)
@click.option(
    "--from",
    "from_path",
    metavar="PATH",
    default=None,
    help="A saved page, a data file or a folder of them (recursive); default: fetch live.",
)
@click.option(
    "--refresh",
    is_flag=True,
    help="Live only: fetch every page again instead of reusing the cached responses.",
)
@click.option(
    "--genre-pages",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Live Every Noise only: also fetch the genre pages (similar/opposite genres) of the "
    "N most popular genres.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def scrape(
    ctx: click.Context,
    source: str,
    from_path: str | None,
    refresh: bool,
    genre_pages: int,
    as_json: bool,
) -> None:
    """Import real genres into the store (origin "training"), with their sources."""
    if from_path is not None:
        from_path = str(Path(from_path).expanduser())
    if (refresh or genre_pages) and from_path is not None:
        raise click.UsageError("--refresh and --genre-pages apply to live fetching, not --from")
    data = asyncio.run(_run(state(ctx).config, source, from_path, refresh, genre_pages))
    if as_json:
        echo_json(data)
        return
    for item in data["inputs"]:
        if "error" in item:
            click.echo(f"  {item['input']}: passed over ({item['error']})")
            continue
        skipped = sum(item["skipped"].values())
        note = f", {skipped} skipped" if skipped else ""
        click.echo(f"  {item['input']}: {item['kind']}, {item['records']} records{note}")
    click.echo(
        f"added {data['added']}, updated {data['updated']}, unchanged {data['unchanged']}, "
        f"skipped {data['skipped']} ({data['records']} records in {data['seconds']} s)"
    )
    for reason, n in data["skipped_reasons"].items():
        click.echo(f"  skipped {n}: {reason}")
