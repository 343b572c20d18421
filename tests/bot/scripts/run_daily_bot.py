"""Run `microgenre bot` like run_bot.py, with the genre of the day on a clock the test drives.

Usage: python tests/bot/scripts/run_daily_bot.py API_BASE GATEWAY_URL CLOCK_FILE
CLOCK_FILE holds an ISO 8601 time with its offset: the scheduler's ``now()``, read at every
check; the scheduler checks every 0.2 s instead of every minute.
"""

import runpy
import sys
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))


def main() -> None:
    import bot.daily

    clock_file = Path(sys.argv.pop(3))

    def now() -> datetime:
        return datetime.fromisoformat(clock_file.read_text(encoding="utf-8").strip())

    bot.daily.system_now = now
    bot.daily.CHECK_INTERVAL_S = 0.2
    runpy.run_path(str(Path(__file__).with_name("run_bot.py")), run_name="__main__")


if __name__ == "__main__":
    main()
