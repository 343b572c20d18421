"""One of several processes that reserve the same genres in the same server at once.

Usage: python tests/deploy/scripts/reserve_race.py DATABASE_URL GUILD_ID START_AT SEED NAME...
Connects, waits for the time START_AT (seconds since the epoch: every racer starts together),
then reserves the names in
requests of up to 5 (as `/genre new count:5` does), in an order shuffled by SEED, and prints
one JSON line: the names this process got.
"""

import asyncio
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))


async def race(url: str, guild_id: int, start_at: float, seed: int, names: list[str]) -> list[str]:
    from bot.store.engine import create_engine, create_sessionmaker
    from bot.store.generations import reserve_generations

    engine = create_engine(url)
    sessions = create_sessionmaker(engine)
    order = list(names)
    random.Random(seed).shuffle(order)
    got: list[str] = []
    try:
        async with sessions.begin() as session:  # connect before the start line
            await session.connection()
        await asyncio.sleep(max(0.0, start_at - time.time()))
        for start in range(0, len(order), 5):
            reserved = await reserve_generations(
                sessions,
                order[start : start + 5],
                guild_id=guild_id,
                channel_id=1,
                user_id=seed,
                model_name="racer",
                model_version_id=None,
                options={},
            )
            got += [r.name for r in reserved if r.generation_id is not None]
    finally:
        await engine.dispose()
    return got


def main() -> int:
    url, guild, start_at, seed, *names = sys.argv[1:]
    got = asyncio.run(race(url, int(guild), float(start_at), int(seed), names))
    print(json.dumps(got), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
