"""Time parsing every file in ../shared/data and importing the records into a blank store.

    .venv/bin/python benchmarks/import_genres.py [DATABASE_URL]

Without a URL a temporary SQLite file is used; pass a ``postgresql+asyncpg://`` URL of an
empty database to measure PostgreSQL. Prints parse time, first import, identical re-import.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bot.store import schema  # noqa: E402
from bot.store.engine import create_engine, create_sessionmaker  # noqa: E402
from bot.store.genres import import_records  # noqa: E402
from scraping.files import data_files, kind_rank, read_document  # noqa: E402

DATA = REPO.parent / "shared" / "data"


async def main(url: str) -> None:
    started = time.perf_counter()
    reports = sorted(
        (read_document(path) for path in data_files(DATA)),
        key=lambda r: kind_rank(str(r.meta["kind"])),
    )
    records = [record for report in reports for record in report.records]
    parsed = time.perf_counter() - started
    print(f"parse: {len(reports)} files, {len(records)} records in {parsed:.2f} s")
    await asyncio.to_thread(schema.upgrade, url, "head")
    engine = create_engine(url)
    try:
        sessions = create_sessionmaker(engine)
        for label in ("first import", "re-import"):
            started = time.perf_counter()
            counts = await import_records(sessions, records)
            elapsed = time.perf_counter() - started
            print(f"{label}: {counts.to_dict()} in {elapsed:.2f} s")
    finally:
        await engine.dispose()


if __name__ == "__main__":
    if not DATA.is_dir():
        sys.exit(f"{DATA} is not present")
    if len(sys.argv) > 1:
        asyncio.run(main(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            asyncio.run(main(f"sqlite+aiosqlite:///{tmp}/bench.db"))
